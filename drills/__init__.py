"""Fault drills on the real back office (``testbed drill``).

The drill owns everything it breaks: its own PostgreSQL cluster (and streaming replica), its
own Redis or NATS server, its own ``testbed serve`` processes and TCP proxies, all on free
ports, all torn down at the end (also on Ctrl-C, SIGTERM and errors). It drives them with the
open-loop generator of :mod:`loadgen`, injects the faults at their times, checks the ledger
and writes the measurement in the simulator's results schema (:mod:`sim.reports.results`).
Nothing imports this package but ``testbed/cli.py``.
"""
