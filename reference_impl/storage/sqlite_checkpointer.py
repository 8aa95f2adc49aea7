"""WAL checkpoints in a background thread, so the event loop never waits for an fsync.

With ``wal_autocheckpoint`` on, the connection that commits runs the checkpoint itself: it
copies the log into the database and fsyncs it inside a money transaction's latency, which
halved the throughput of one writer on this machine. Here the writer's automatic checkpoint
is off; a thread with its own connection runs, every ``interval`` seconds when something was
written, a PASSIVE checkpoint (copies and syncs without blocking the writer; sqlite3 releases
the GIL meanwhile) followed by a RESTART checkpoint that only has the last few frames left,
so the next writer starts the log from the beginning and the file stays bounded.
The RESTART holds the writer lock while it waits for readers on other connections (the
audit reads its snapshot on its own connection), so it waits at most ``RESTART_WAIT_MS``
and otherwise gives up until the next pass: a long reader never stalls the writers.
Durability is unchanged: a commit is in the log (synchronous=NORMAL) before it is answered.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

RESTART_WAIT_MS = 5
"""Longest time the RESTART checkpoint (which blocks writers) waits for readers to finish."""


class WalCheckpointer:
    """A daemon thread that checkpoints one SQLite database file until stopped."""

    def __init__(self, path: Path, interval: float = 0.25, busy_timeout_ms: int = 2000) -> None:
        self.path, self.interval, self.busy_timeout_ms = path, interval, busy_timeout_ms
        self.passes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current pass and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            last_version = None
            while not self._stop.wait(self.interval):
                version = db.execute("PRAGMA data_version").fetchone()[0]
                if version == last_version:
                    continue
                last_version = version
                self.checkpoint(db)
        finally:
            db.close()

    def checkpoint(self, db: sqlite3.Connection) -> None:
        """One pass: PASSIVE (the bulk, writers go on), then RESTART (the tail)."""
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            db.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
            try:
                busy = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
            finally:
                db.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            if busy:  # a reader still holds an old snapshot: the tail waits for next pass
                log.debug("checkpoint restart deferred: a reader is active")
            self.passes += 1
        except sqlite3.OperationalError as exc:  # busy past the timeout: next pass
            log.debug("checkpoint skipped: %s", exc)
