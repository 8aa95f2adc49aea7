"""The scenario model: what is simulated, as plain data.

``scenario`` (the YAML language, pydantic), ``distributions`` (service demands),
``population`` (online players as arrays, arrivals by thinning) and ``topology`` (a deployment
compiled into stations and routes). Nothing here imports SimPy: any engine can read it.
"""
