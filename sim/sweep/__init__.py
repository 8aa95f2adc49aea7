"""Sweeps: a grid of scenario variants (``--vary``) simulated on Dask, as one tidy table.

``grid`` (dimensions and points, ``--set`` semantics), ``execute`` (Dask client, task
bundling, results back as data), ``table`` (the tidy table, save and load), ``capacity`` (the
smallest configuration meeting every SLO, the breaking load), ``run`` (``run_sweep``).
"""

from sim.sweep.grid import Dimension, parse_vary
from sim.sweep.run import Sweep, run_sweep
from sim.sweep.table import load_sweep

__all__ = ["Dimension", "Sweep", "load_sweep", "parse_vary", "run_sweep"]
