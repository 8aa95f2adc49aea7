"""Fault specs of ``testbed drill --fault SPEC``: parsed and checked against the topology.

=================================== =====================================================
``kill:SERVICE@T``                  kill -9 one service process at T s (restarted by the
                                    supervisor of ``testbed serve``; the monolith by the
                                    drill's own watcher)
``hang:SERVICE@T+D``                SIGSTOP at T, SIGCONT at T+D
``db-failover@T``                   kill the primary, promote the streaming replica
``db-restart@T[+D]``                the database goes away for D s (default 2) and comes back
``broker-down@T+D``                 the broker stops at T and starts again at T+D
``latency:FROM->TO@T+D:MS``         MS ms added to every request FROM sends TO, from T to T+D
=================================== =====================================================

T counts from the start of the measured window (after the players' set-up).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from drills.limits import DEFAULT_DB_DOWN_S, MAX_FAULT_WINDOW_S, MAX_LATENCY_MS
from reference_impl.deployments.registry import ROLES, TOPOLOGIES

KINDS = ("kill", "hang", "db-failover", "db-restart", "broker-down", "latency")

_NUM = r"[0-9]+(?:\.[0-9]+)?"
_PATTERNS = {
    "kill": re.compile(rf"kill:(?P<service>[a-z]+)@(?P<at>{_NUM})"),
    "hang": re.compile(rf"hang:(?P<service>[a-z]+)@(?P<at>{_NUM})\+(?P<dur>{_NUM})"),
    "db-failover": re.compile(rf"db-failover@(?P<at>{_NUM})"),
    "db-restart": re.compile(rf"db-restart@(?P<at>{_NUM})(?:\+(?P<dur>{_NUM}))?"),
    "broker-down": re.compile(rf"broker-down@(?P<at>{_NUM})\+(?P<dur>{_NUM})"),
    "latency": re.compile(rf"latency:(?P<src>[a-z]+)->(?P<service>[a-z]+)"
                          rf"@(?P<at>{_NUM})\+(?P<dur>{_NUM}):(?P<ms>{_NUM})"),
}
_USAGE = {
    "kill": "kill:SERVICE@T", "hang": "hang:SERVICE@T+D", "db-failover": "db-failover@T",
    "db-restart": "db-restart@T[+D]", "broker-down": "broker-down@T+D",
    "latency": "latency:FROM->TO@T+D:MS",
}


class FaultSpecError(ValueError):
    """A ``--fault`` that cannot run; the message says why."""


@dataclass(frozen=True)
class Fault:
    """One fault of a drill. ``service`` is the process hit (kill, hang) or the callee of a
    latency fault; ``source`` its caller; ``duration_s`` 0 for instant faults."""

    kind: str
    at_s: float
    duration_s: float = 0.0
    service: str = ""
    source: str = ""
    delay_ms: float = 0.0
    text: str = ""

    @property
    def end_s(self) -> float:
        """When the fault's trigger ends (its start for instant faults)."""
        return self.at_s + self.duration_s

    @property
    def label(self) -> str:
        """Short name for tables and plots."""
        return self.text


def topology_roles(topology: str) -> list[str]:
    """Processes of ``topology`` in start order."""
    return [r for stage in TOPOLOGIES[topology] for r in stage]


def public_role(topology: str) -> str:
    """The process serving the public API."""
    return next(r for r in topology_roles(topology) if ROLES[r].public)


def parse_fault(text: str, *, topology: str, db: str, duration_s: float) -> Fault:
    """The fault ``text`` means in a drill of ``topology`` over ``db`` lasting
    ``duration_s``; :class:`FaultSpecError` naming the reason otherwise."""
    kind = next((k for k in KINDS if text.startswith(k + ":") or text.startswith(k + "@")),
                None)
    if kind is None:
        raise FaultSpecError(f"{text!r}: unknown fault; one of "
                             + ", ".join(_USAGE.values()))
    m = _PATTERNS[kind].fullmatch(text)
    if m is None:
        raise FaultSpecError(f"{text!r}: expected {_USAGE[kind]} (T, D, MS in seconds and "
                             "milliseconds, plain decimal numbers)")
    g = m.groupdict()
    at = float(g["at"])
    dur = float(g["dur"]) if g.get("dur") else (DEFAULT_DB_DOWN_S if kind == "db-restart"
                                                else 0.0)
    fault = Fault(kind=kind, at_s=at, duration_s=dur, service=g.get("service") or "",
                  source=g.get("src") or "", delay_ms=float(g.get("ms") or 0), text=text)
    _check(fault, topology, db, duration_s)
    return fault


def _check(f: Fault, topology: str, db: str, duration_s: float) -> None:
    if not (math.isfinite(f.at_s) and 0 <= f.at_s < duration_s):
        raise FaultSpecError(f"{f.text!r}: T={f.at_s:g} s must lie within the drill's "
                             f"{duration_s:g} s")
    if f.kind in ("hang", "broker-down", "latency", "db-restart") and \
            not 0 < f.duration_s <= MAX_FAULT_WINDOW_S:
        raise FaultSpecError(f"{f.text!r}: D={f.duration_s:g} s must be > 0 and at most "
                             f"{MAX_FAULT_WINDOW_S:g} s")
    if f.end_s > duration_s:
        raise FaultSpecError(f"{f.text!r}: ends at {f.end_s:g} s, after the drill's "
                             f"{duration_s:g} s (the recovery must be measured)")
    roles = topology_roles(topology)
    if f.kind in ("kill", "hang", "latency") and f.service not in roles:
        raise FaultSpecError(f"{f.text!r}: no service {f.service!r} in {topology} "
                             f"(its processes: {', '.join(roles)})")
    if f.kind in ("db-failover", "db-restart") and db not in ("postgresql", "sqlite"):
        raise FaultSpecError(f"{f.text!r}: unknown database {db!r}")
    if f.kind == "db-failover" and db != "postgresql":
        raise FaultSpecError(f"{f.text!r}: needs --db postgresql (SQLite has no replica)")
    if f.kind == "broker-down" and topology == "monolith":
        raise FaultSpecError(f"{f.text!r}: the monolith has no broker (events in-process)")
    if f.kind == "latency":
        pub = public_role(topology)
        if f.source != pub or f.service == pub:
            raise FaultSpecError(
                f"{f.text!r}: the internal hops of {topology} go from {pub} to "
                f"{', '.join(r for r in roles if r != pub) or 'nothing'}")
        if not 0 < f.delay_ms <= MAX_LATENCY_MS:
            raise FaultSpecError(f"{f.text!r}: MS={f.delay_ms:g} must be > 0 and at most "
                                 f"{MAX_LATENCY_MS:g}")


def check_together(faults: list[Fault]) -> None:
    """Faults that cannot share a drill: two failovers, or overlapping windows on the same
    target (a second SIGSTOP of a stopped process would end with the first SIGCONT)."""
    if sum(f.kind == "db-failover" for f in faults) > 1:
        raise FaultSpecError("only one db-failover per drill (there is one replica)")
    for i, a in enumerate(faults):
        for b in faults[i + 1:]:
            same = (a.kind, a.service, a.source) == (b.kind, b.service, b.source)
            if same and a.duration_s and a.at_s < b.end_s and b.at_s < a.end_s:
                raise FaultSpecError(f"{a.text!r} and {b.text!r} overlap on the same target")
