"""Wire formats between processes: wallet commands and broker event envelopes (JSON)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from reference_impl.domain.commands import Bet, Command, Deposit, Rollback, Win, Withdrawal
from reference_impl.domain.errors import ErrorCode, WalletError
from reference_impl.rules import MoneyEvent

COMMANDS: dict[str, type[Command]] = {
    c.kind: c for c in (Deposit, Withdrawal, Bet, Win, Rollback)  # type: ignore[misc]
}
MONEY, EXCLUSION = "money", "exclusion"


def command_to_json(cmd: Command) -> dict[str, Any]:
    """``{"kind": ..., <fields>}``; :func:`command_from_json` rebuilds an equal command."""
    return {"kind": cmd.kind, **dataclasses.asdict(cmd)}


def command_from_json(data: dict[str, Any]) -> Command:
    """Rebuild (and re-validate) a command; VALIDATION_ERROR on anything malformed."""
    fields = dict(data)
    cls = COMMANDS.get(str(fields.pop("kind", "")))
    if cls is None:
        raise WalletError(ErrorCode.VALIDATION_ERROR, "unknown command kind")
    try:
        return cls(**fields)
    except TypeError as exc:
        raise WalletError(ErrorCode.VALIDATION_ERROR, f"bad command fields: {exc}") from exc


def event_id(event: MoneyEvent) -> str:
    """Deterministic for events of a transaction (duplicates collapse), random otherwise."""
    if event.transaction_id is None:
        return uuid.uuid4().hex
    return f"{event.kind}:{event.player_id}:{event.transaction_id}"


@dataclasses.dataclass(frozen=True)
class Envelope:
    """One broker message: an id consumers deduplicate by, a type and its JSON payload."""

    id: str
    type: str
    data: dict[str, Any]

    @classmethod
    def money(cls, event: MoneyEvent) -> Envelope:
        """A money event (bet, win, rollback, deposit, withdrawal...)."""
        return cls(event_id(event), MONEY, event.model_dump(mode="json"))

    @classmethod
    def exclusion(cls, player_id: str, until: float | None) -> Envelope:
        """Self-exclusion set (``until``) or lifted (None) for ``player_id``."""
        return cls(uuid.uuid4().hex, EXCLUSION, {"player_id": player_id, "until": until})

    def to_fields(self) -> dict[str, bytes]:
        """Redis stream entry fields."""
        return {"id": self.id.encode(), "type": self.type.encode(),
                "data": orjson.dumps(self.data)}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> Envelope:
        """Parse what :meth:`to_fields` wrote (ValueError when malformed)."""
        try:
            return cls(fields[b"id"].decode(), fields[b"type"].decode(),
                       orjson.loads(fields[b"data"]))
        except (KeyError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"malformed envelope: {exc}") from exc

    def to_bytes(self) -> bytes:
        """One JSON document (for brokers with opaque payloads)."""
        return orjson.dumps({"id": self.id, "type": self.type, "data": self.data})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        """Parse what :meth:`to_bytes` wrote (ValueError when malformed)."""
        try:
            doc = orjson.loads(raw)
            return cls(str(doc["id"]), str(doc["type"]), dict(doc["data"]))
        except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"malformed envelope: {exc}") from exc

    def money_event(self) -> MoneyEvent:
        """The payload of a money envelope."""
        return MoneyEvent.model_validate(self.data)


def oldest_money_ts(backlog: Iterable[Envelope]) -> float | None:
    """Timestamp (s) of the first money event in a FIFO backlog, None when there is none."""
    for env in backlog:
        if env.type == MONEY:
            return float(env.data["ts"])
    return None
