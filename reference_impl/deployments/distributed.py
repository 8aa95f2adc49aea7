"""The microservices and hybrid deployments: which processes, on which ports, in which order.

Microservices: wallet first (it creates the schema), then player, fraud and analytics, then
the gateway on the public port. Hybrid: fraud and analytics, then the ``edge`` process (public
API, player and wallet in-process) on the public port. Events go through the broker.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from reference_impl.deployments.registry import ROLES, TOPOLOGIES
from reference_impl.deployments.spec import ChildSpec
from reference_impl.deployments.supervisor import Supervisor
from reference_impl.http.guard import EdgeConfig
from reference_impl.services.backoffice import BackOfficeConfig
from reference_impl.transport.broker import DEFAULT_BROKER, broker_prefix, check_broker_url
from reference_impl.transport.resilience import DEFAULT_POLICY, CallPolicy


@dataclass(frozen=True)
class DistributedConfig:
    """``testbed serve --topology microservices|hybrid`` settings."""

    topology: str
    office: BackOfficeConfig
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    broker: str = DEFAULT_BROKER
    internal_base_port: int | None = None
    log_level: str = "warning"
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    rpc_policy: CallPolicy = DEFAULT_POLICY  # internal calls of the public process
    peer_urls: tuple[tuple[str, str], ...] = ()  # (role, URL) the public process calls instead


def plan(config: DistributedConfig) -> list[list[ChildSpec]]:
    """The children of the deployment, stage by stage, with their ports and peers."""
    if config.topology not in TOPOLOGIES or config.topology == "monolith":
        raise ValueError(f"topology must be one of {sorted(set(TOPOLOGIES) - {'monolith'})}")
    check_broker_url(config.broker)
    stages = TOPOLOGIES[config.topology]
    internal = [name for stage in stages for name in stage if not ROLES[name].public]
    if config.internal_base_port is not None:
        ports = {r: config.internal_base_port + i for i, r in enumerate(internal)}
    else:
        ports = dict(zip(internal, free_ports(len(internal), avoid={config.port}), strict=True))
    peers = {r: f"http://127.0.0.1:{p}" for r, p in ports.items()}
    for name, url in config.peer_urls:  # e.g. through a proxy (testbed drill's latency)
        if name not in peers:
            raise ValueError(f"peer {name!r}: not an internal service of {config.topology} "
                             f"({', '.join(sorted(peers))})")
        peers[name] = url
    prefix = broker_prefix(config.office.db)
    token = secrets.token_hex(32)  # internal services accept RPC only with it

    def spec(role: str) -> ChildSpec:
        public = ROLES[role].public
        return ChildSpec(
            role=role, port=config.port if public else ports[role], office=config.office,
            broker=config.broker, broker_prefix=prefix,
            host=config.host if public else "127.0.0.1",
            peers=peers if public else {}, workers=config.workers, log_level=config.log_level,
            edge=config.edge, internal_token=token,
            rpc_policy=config.rpc_policy.to_dict() if public else {},
        )

    return [[spec(role) for role in stage] for stage in stages]


def free_ports(n: int, avoid: set[int]) -> list[int]:
    """``n`` distinct TCP ports nobody listens on now (the kernel's choice)."""
    import socket

    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            port = s.getsockname()[1]
            if port not in avoid:
                ports.append(port)
    finally:
        for s in sockets:
            s.close()
    return ports


def serve_distributed(config: DistributedConfig) -> int:
    """Run the deployment under a :class:`Supervisor` until Ctrl-C/SIGTERM; the exit code."""
    return Supervisor(plan(config)).run()
