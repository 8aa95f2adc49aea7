"""The discrete-event engine (SimPy) that runs a compiled topology against arrival streams."""
