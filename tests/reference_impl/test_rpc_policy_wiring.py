"""The internal-call policy reaches the public process of each distributed topology (the only
one that calls others), through the child's spec in its environment."""

from __future__ import annotations

import pytest

from reference_impl.deployments.distributed import DistributedConfig, plan
from reference_impl.deployments.registry import ROLES
from reference_impl.deployments.spec import ChildSpec
from reference_impl.services.backoffice import BackOfficeConfig
from reference_impl.transport.resilience import DEFAULT_POLICY, CallPolicy


@pytest.mark.parametrize("topology", ["microservices", "hybrid"])
def test_the_policy_reaches_the_public_process_through_its_spec(topology: str) -> None:
    policy = CallPolicy(timeout_s=0.75, breaker_open_s=2.0)
    config = DistributedConfig(topology=topology, office=BackOfficeConfig(db="sqlite:///x.db"),
                               internal_base_port=40_000, rpc_policy=policy)
    specs = [s for stage in plan(config) for s in stage]
    for spec in specs:
        received = ChildSpec.from_json(spec.to_json())
        if ROLES[spec.role].public:
            assert CallPolicy.from_dict(received.rpc_policy) == policy
        else:
            assert received.rpc_policy == {}  # calls no one
    default = DistributedConfig(topology=topology, office=BackOfficeConfig(db="sqlite:///x.db"),
                                internal_base_port=40_000)
    public = [s for stage in plan(default) for s in stage if ROLES[s.role].public]
    assert [CallPolicy.from_dict(s.rpc_policy) for s in public] == [DEFAULT_POLICY]
