"""`testbed serve --peer SERVICE=URL`: the public process calls SERVICE at URL (a drill's
latency proxy); bad values exit 2 naming --peer and start nothing."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from reference_impl.deployments.distributed import DistributedConfig, plan
from reference_impl.services.backoffice import BackOfficeConfig
from testbed.cli import cli


def test_plan_routes_the_public_process_through_the_peer() -> None:
    cfg = DistributedConfig(topology="microservices", office=BackOfficeConfig(db=None),
                            internal_base_port=25000,
                            peer_urls=(("wallet", "http://127.0.0.1:29999"),))
    specs = {s.role: s for stage in plan(cfg) for s in stage}
    assert specs["gateway"].peers["wallet"] == "http://127.0.0.1:29999"
    assert specs["gateway"].peers["player"] == f"http://127.0.0.1:{specs['player'].port}"
    assert specs["wallet"].port == 25000  # the service itself still listens on its own port
    bad = DistributedConfig(topology="hybrid", office=BackOfficeConfig(db=None),
                            peer_urls=(("wallet", "http://127.0.0.1:29999"),))
    with pytest.raises(ValueError, match="not an internal service of hybrid"):
        plan(bad)


@pytest.mark.parametrize(("args", "reason"), [
    (["--topology", "microservices", "--peer", "wallet"], "expected SERVICE=http"),
    (["--topology", "microservices", "--peer", "wallet=ftp://x"], "expected SERVICE=http"),
    (["--topology", "hybrid", "--peer", "wallet=http://127.0.0.1:1"], "not an internal"),
    (["--topology", "monolith", "--peer", "wallet=http://127.0.0.1:1"], "no internal calls"),
])
def test_bad_peers_exit_2(args: list[str], reason: str) -> None:
    res = CliRunner().invoke(cli, ["serve", *args])
    assert res.exit_code == 2, res.output
    assert "--peer" in res.output and reason in res.output
