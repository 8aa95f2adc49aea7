"""Real load against the reference back office, written in the simulator's results schema.

* :mod:`loadgen.behaviour`: what a scenario's players do, as HTTP requests (one definition,
  shared by the locust users and the open-loop generator);
* :mod:`loadgen.signing`: the credentials file and the request-signing contract;
* :mod:`loadgen.openloop`: the open-loop (Poisson, coordinated-omission-free) generator and
  its lean asyncio HTTP/1.1 client;
* :mod:`loadgen.locust_run`: closed-loop users (locust ``FastHttpUser``), local or
  master + worker processes, and the ``LoadTestShape`` replaying the scenario's curve;
* :mod:`loadgen.record`: HDR histograms per operation and per second, turned into
  :class:`sim.reports.results.Results` with ``source: measurement``;
* :mod:`loadgen.cli`: ``testbed load`` (attached by ``testbed/cli.py``).

``loadgen`` imports the scenario schema and the results schema/report of ``sim``, never
``reference_impl`` (it talks to the back office over HTTP only).
"""
