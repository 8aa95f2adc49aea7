"""The one registry of roles and topologies (deployments/registry.py)."""

from __future__ import annotations

import pytest

from reference_impl.deployments.distributed import DistributedConfig, plan
from reference_impl.deployments.registry import ROLES, TOPOLOGIES, role, workers_for
from reference_impl.deployments.spec import ChildSpec
from reference_impl.services.backoffice import BackOfficeConfig


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_each_topology_has_one_public_process_last(topology: str) -> None:
    stages = TOPOLOGIES[topology]
    public = [n for stage in stages for n in stage if ROLES[n].public]
    assert len(public) == 1 and stages[-1] == public


def test_the_plan_follows_the_registry() -> None:
    office = BackOfficeConfig(db="sqlite:///x.db")
    for topology in ("microservices", "hybrid"):
        stages = plan(DistributedConfig(topology=topology, office=office, port=9999))
        assert [[s.role for s in stage] for stage in stages] == TOPOLOGIES[topology]
        for s in (s for stage in stages for s in stage):
            assert (s.port == 9999) == ROLES[s.role].public
    with pytest.raises(ValueError, match="topology"):
        plan(DistributedConfig(topology="monolith", office=office))


def test_unknown_roles_are_named_and_single_process_roles_get_one_worker() -> None:
    with pytest.raises(ValueError, match="unknown role 'cache'"):
        role("cache")
    with pytest.raises(ValueError, match="unknown role"):
        ChildSpec(role="cache", port=1, office=BackOfficeConfig(), broker="redis://x",
                  broker_prefix="p")
    assert workers_for("fraud", 4) == 1 and workers_for("wallet", 4) == 4
