"""What one process of a multi-process deployment runs: its role, port, peers and settings."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from reference_impl.deployments.registry import role
from reference_impl.http.guard import EdgeConfig
from reference_impl.services.backoffice import BackOfficeConfig

SPEC_ENV = "TESTBED_CHILD_SPEC"


@dataclass(frozen=True)
class ChildSpec:
    """One child process of ``testbed serve --topology microservices|hybrid``.

    Roles are those of :data:`reference_impl.deployments.registry.ROLES`. ``peers`` maps
    component names to base URLs.
    """

    role: str
    port: int
    office: BackOfficeConfig
    broker: str
    broker_prefix: str
    host: str = "127.0.0.1"
    peers: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    log_level: str = "warning"
    edge: EdgeConfig = field(default_factory=EdgeConfig)  # the public roles' guard
    internal_token: str = ""  # bearer token of the RPC between services ("" = none)
    rpc_policy: dict[str, Any] = field(default_factory=dict)  # CallPolicy fields to change

    def __post_init__(self) -> None:
        role(self.role)  # ValueError naming the known roles

    @property
    def url(self) -> str:
        """Where the child answers (internal children on 127.0.0.1)."""
        return f"http://127.0.0.1:{self.port}"

    def to_json(self) -> str:
        """For the child's environment."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ChildSpec:
        """Read what :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(office=BackOfficeConfig(**data.pop("office")),
                   edge=EdgeConfig(**data.pop("edge")), **data)
