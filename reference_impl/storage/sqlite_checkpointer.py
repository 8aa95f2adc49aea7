"""WAL checkpoints in a background thread, so the event loop never waits for an fsync.

With ``wal_autocheckpoint`` on, the connection that commits runs the checkpoint itself: it
copies the log into the database and fsyncs it inside a money transaction's latency, which
halved the throughput of one writer on this machine. Here the writer's automatic checkpoint
is off; a thread with its own connection runs, every ``interval`` seconds when something was
written, a PASSIVE checkpoint (copies and syncs without blocking the writer; sqlite3 releases
the GIL meanwhile); once the log holds :data:`RESTART_FRAMES` frames, a RESTART checkpoint
follows, which only has the last few frames left, so the next writer starts the log from the
beginning and the file stays bounded.

A RESTART blocks every writer until it has copied the tail and synced the database file.
The writer is this process's event loop, so it must not wait for it inside SQLite: its busy
handler sleeps in steps of 1, 2, 5, 10, 15... ms, and the loop answers nobody meanwhile.
Measured (monolith on SQLite, 2,500 requests/s, a RESTART after every pass of 0.25 s): the
back office answered nobody 3.3 times a second for a median 9 ms (up to 87), which was the
p99 of every operation. So the RESTART runs under ``gate``, a lock the storage's writer
takes around each write transaction (:meth:`SqliteStorage.transaction`, the group commit):
the RESTART waits for the batch in progress, and the next batch waits for the RESTART
asynchronously while the loop goes on answering reads and queueing money commands.
The RESTART still waits for readers on other connections (the audit reads its snapshot on
its own connection), at most ``RESTART_WAIT_MS``, and otherwise gives up until the next pass:
a long reader never stalls the writers.
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
RESTART_FRAMES = 4096
"""Frames (pages of 4 KiB) the log holds before a pass restarts it: the log file stays
under about 16 MiB plus what is written during one pass (seen at 52 MB after a players'
set-up burst), and writers wait for a RESTART at most once per 16 MiB written instead of
every pass. With the gate, the same rate stalled 50-57 times per 30 s instead of 96-105;
what is left still follows the pass (its PASSIVE part), cause not found."""


class WalCheckpointer:
    """A daemon thread that checkpoints one SQLite database file until stopped."""

    def __init__(self, path: Path, gate: threading.Lock, interval: float = 0.25,
                 busy_timeout_ms: int = 2000, restart_frames: int = RESTART_FRAMES) -> None:
        assert restart_frames >= 0 and interval > 0
        self.path, self.interval, self.busy_timeout_ms = path, interval, busy_timeout_ms
        self.gate, self.restart_frames = gate, restart_frames
        self.passes = 0
        self.restarts = 0
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

    def checkpoint(self, db: sqlite3.Connection, restart: bool | None = None) -> None:
        """One pass: PASSIVE (the bulk, writers go on), then, when the log holds
        ``restart_frames`` frames (or ``restart`` says so), RESTART (the tail) under the
        writers' gate."""
        try:
            _, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if restart is None:
                restart = frames >= self.restart_frames
            if restart:
                self._restart(db)
            self.passes += 1
        except sqlite3.OperationalError as exc:  # busy past the timeout: next pass
            log.debug("checkpoint skipped: %s", exc)

    def _restart(self, db: sqlite3.Connection) -> None:
        db.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
        try:
            with self.gate:  # no write transaction of this process is open meanwhile
                busy = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
        finally:
            db.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        if busy:  # a reader still holds an old snapshot: the tail waits for next pass
            log.debug("checkpoint restart deferred: a reader is active")
        else:
            self.restarts += 1
