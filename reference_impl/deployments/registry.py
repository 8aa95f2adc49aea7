"""The one registry of service roles and topologies, and the server options every process
uses (data only: the apps are built in :mod:`reference_impl.deployments.roles`).

A topology is a list of stages, each a list of roles started together (a stage waits for the
previous one to answer its health check). The monolith is the one-role topology: a single
``monolith`` process with every component in-process, served with the same options as every
process of the other topologies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Role:
    """What a process of this role is."""

    name: str
    public: bool  # serves the public API on the deployment's port and host
    single_process: bool  # keeps in-memory state fed by one consumer: never several workers
    description: str


ROLES: dict[str, Role] = {r.name: r for r in (
    Role("monolith", True, False, "the public API with every component in-process"),
    Role("gateway", True, False, "the public API with every component remote"),
    Role("edge", True, False, "the public API with player and wallet in-process"),
    Role("player", False, False, "players and limits behind RPC"),
    Role("wallet", False, False, "money commands behind RPC (creates the schema)"),
    Role("fraud", False, True, "asynchronous rules on the event stream, alerts"),
    Role("analytics", False, True, "event totals"),
)}

TOPOLOGIES: dict[str, list[list[str]]] = {
    "monolith": [["monolith"]],
    "microservices": [["wallet"], ["player", "fraud", "analytics"], ["gateway"]],
    "hybrid": [["fraud", "analytics"], ["edge"]],
}

SERVER_OPTIONS: dict[str, Any] = {
    "http": "httptools", "loop": "uvloop", "proxy_headers": False, "access_log": False,
    "timeout_graceful_shutdown": 5,
}
"""uvicorn options of every process: the C HTTP parser (httptools), the libuv event loop
(uvloop), no X-Forwarded-* middleware (the back office never reads the client address), no
access log, five seconds to finish requests on shutdown."""


def role(name: str) -> Role:
    """The role called ``name``; ValueError naming the known ones otherwise."""
    if name not in ROLES:
        raise ValueError(f"unknown role {name!r}: one of {sorted(ROLES)}")
    return ROLES[name]


def workers_for(name: str, requested: int) -> int:
    """Worker processes of a role: ``requested``, or 1 for single-process roles."""
    return 1 if role(name).single_process else requested


for _stages in TOPOLOGIES.values():  # every role named by a topology is registered
    for _stage in _stages:
        for _name in _stage:
            assert _name in ROLES, _name
