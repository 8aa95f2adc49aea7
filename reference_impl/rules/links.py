"""Exact index of which players used an identifier (payment instrument, device) recently."""

from __future__ import annotations

from collections import deque


class LinkIndex:
    """Players seen with each identifier within the last ``window_s`` seconds (None = ever).

    A player is linked to a key at time ``now`` when he used it at some ``ts`` with
    ``now - window_s < ts <= now``. Time is clamped to be non-decreasing (an event older than
    one already seen counts as seen at the latest time), so memory stays bounded by the uses
    inside the window.
    """

    def __init__(self, window_s: float | None) -> None:
        if window_s is not None and window_s <= 0:
            raise ValueError(f"window_s must be > 0 or None, got {window_s}")
        self.window_s = window_s
        self._last_use: dict[str, dict[str, float]] = {}
        self._uses: deque[tuple[float, str, str]] = deque()
        self._clock = float("-inf")

    def __len__(self) -> int:
        """Number of identifiers currently indexed."""
        return len(self._last_use)

    def _advance(self, now: float) -> float:
        now = max(now, self._clock)
        self._clock = now
        if self.window_s is None:
            return now
        horizon = now - self.window_s
        uses = self._uses
        while uses and uses[0][0] <= horizon:
            ts, key, player = uses.popleft()
            players = self._last_use.get(key)
            if players is not None and players.get(player) == ts:
                del players[player]
                if not players:
                    del self._last_use[key]
        return now

    def touch(self, key: str, player_id: str, ts: float) -> None:
        """Record that ``player_id`` used ``key`` at ``ts``."""
        ts = self._advance(ts)
        players = self._last_use.setdefault(key, {})
        if players.get(player_id) == ts:
            return
        players[player_id] = ts
        if self.window_s is not None:
            self._uses.append((ts, key, player_id))

    def others(self, key: str, player_id: str, now: float) -> set[str]:
        """Players other than ``player_id`` who used ``key`` inside the window."""
        self._advance(now)
        return {p for p in self._last_use.get(key, ()) if p != player_id}

    def expire(self, now: float) -> None:
        """Evict what has left the window at ``now``."""
        self._advance(now)
