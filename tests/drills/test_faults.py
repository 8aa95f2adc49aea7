"""Fault specs of ``testbed drill``: what parses, what is refused (exit 2 naming --fault)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from drills.faults import Fault, FaultSpecError, check_together, parse_fault
from drills.limits import MAX_FAULT_WINDOW_S, MAX_LATENCY_MS
from testbed.cli import cli


def _p(text: str, topology: str = "microservices", db: str = "postgresql",
       duration: float = 60) -> Fault:
    return parse_fault(text, topology=topology, db=db, duration_s=duration)


def test_every_kind_parses() -> None:
    assert _p("kill:wallet@10") == Fault("kill", 10.0, 0.0, "wallet", text="kill:wallet@10")
    h = _p("hang:fraud@5+2.5")
    assert (h.kind, h.at_s, h.duration_s, h.end_s, h.service) == ("hang", 5, 2.5, 7.5, "fraud")
    assert _p("db-failover@3").kind == "db-failover"
    assert _p("db-restart@3").duration_s > 0  # the default down time
    assert _p("db-restart@3+4").duration_s == 4
    assert _p("broker-down@1+2").end_s == 3
    lat = _p("latency:gateway->wallet@2+3:150")
    assert (lat.source, lat.service, lat.delay_ms, lat.end_s) == ("gateway", "wallet", 150, 5)
    assert _p("latency:edge->fraud@2+3:1", topology="hybrid").source == "edge"
    assert _p("kill:monolith@1", topology="monolith", db="sqlite").service == "monolith"
    assert _p("db-restart@1+1", topology="monolith", db="sqlite").kind == "db-restart"


@pytest.mark.parametrize(("text", "topology", "db", "reason"), [
    ("explode@3", "microservices", "postgresql", "unknown fault"),
    ("kill:wallet", "microservices", "postgresql", "expected kill:SERVICE@T"),
    ("kill:wallet@-1", "microservices", "postgresql", "expected"),
    ("kill:wallet@nan", "microservices", "postgresql", "expected"),
    ("kill:wallet@1e3", "microservices", "postgresql", "expected"),
    ("kill:wallet@60", "microservices", "postgresql", "within the drill"),
    ("kill:wallet@3", "monolith", "sqlite", "no service 'wallet' in monolith"),
    ("kill:gateway@3", "hybrid", "postgresql", "no service 'gateway' in hybrid"),
    ("hang:fraud@3", "microservices", "postgresql", "expected hang:SERVICE@T+D"),
    ("hang:fraud@3+0", "microservices", "postgresql", "must be > 0"),
    ("hang:fraud@50+20", "microservices", "postgresql", "after the drill's 60 s"),
    (f"hang:fraud@3+{MAX_FAULT_WINDOW_S + 1:g}", "microservices", "postgresql", "at most"),
    ("db-failover@3", "monolith", "sqlite", "needs --db postgresql"),
    ("broker-down@3+1", "monolith", "postgresql", "no broker"),
    ("broker-down@3", "hybrid", "postgresql", "expected broker-down@T+D"),
    ("latency:wallet->player@3+1:10", "microservices", "postgresql", "internal hops"),
    ("latency:gateway->gateway@3+1:10", "microservices", "postgresql", "internal hops"),
    ("latency:edge->wallet@3+1:10", "hybrid", "postgresql", "no service 'wallet'"),
    ("latency:gateway->wallet@3+1:0", "microservices", "postgresql", "MS=0"),
    (f"latency:gateway->wallet@3+1:{MAX_LATENCY_MS * 2:g}", "microservices", "postgresql",
     "at most"),
])
def test_bad_specs_say_why(text: str, topology: str, db: str, reason: str) -> None:
    with pytest.raises(FaultSpecError, match=reason.replace("+", r"\+")):
        _p(text, topology, db)


def test_faults_that_cannot_share_a_drill() -> None:
    with pytest.raises(FaultSpecError, match="only one db-failover"):
        check_together([_p("db-failover@1"), _p("db-failover@5")])
    with pytest.raises(FaultSpecError, match="overlap"):
        check_together([_p("hang:wallet@1+5"), _p("hang:wallet@3+1")])
    check_together([_p("hang:wallet@1+2"), _p("hang:wallet@3+1"), _p("kill:player@2")])


@given(at=st.decimals(0, 29, places=2), dur=st.decimals("0.01", 30, places=2),
       ms=st.integers(1, 10_000))
def test_numbers_round_trip(at: object, dur: object, ms: int) -> None:
    f = _p(f"latency:gateway->fraud@{at}+{dur}:{ms}")
    assert (f.at_s, f.duration_s, f.delay_ms) == (float(at), float(dur), ms)  # type: ignore
    assert f.end_s >= f.at_s


@pytest.mark.parametrize(("args", "hint"), [
    (["--fault", "kill:wallet@3", "--topology", "monolith", "--db", "sqlite"], "--fault"),
    (["--fault", "hang:x@1+1", "--topology", "hybrid"], "--fault"),
    (["--fault", "kill:wallet@3", "--topology", "microservices", "--rate", "nan"], "--rate"),
    (["--fault", "kill:wallet@3", "--topology", "microservices", "--duration", "inf"],
     "--duration"),
    (["--fault", "kill:wallet@3", "--topology", "microservices", "--timeout", "0"],
     "--timeout"),
])
def test_cli_refuses_bad_flags_with_exit_2(args: list[str], hint: str, tmp_path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["drill", *args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert hint in res.output and "Traceback" not in res.output
    assert not out.exists()  # nothing was started or written
