"""Top-level command line of the testbed: the simulator's and the back office's commands."""
