"""Top-level command line of the testbed: dispatches to the simulator and the reference back office."""
