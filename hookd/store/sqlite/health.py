"""The SQLite store's health: a last known state that readiness reads without waiting.

``/readyz`` used to run ``BEGIN IMMEDIATE`` on the event loop with a 30 s busy timeout:
while another process held the write lock, the whole loop (every public request with
it) waited, 10.5 s in the probe that found it; and it said "store ok" on a full disk
while every delivery was refused. Now `SqliteHealth.state` only combines what is known:

- the inbox's last outcomes: a failed fsync, or a write transaction that failed (disk
  full: "database or disk is full"; the lock given up), until one commits again;
- a probe thread, once a second: the file writable, free space on its file system, and
  whether the write lock can be taken (waiting `PROBE_BUSY` at most: the inbox's own
  transactions take milliseconds); held by someone else for `LOCK_WAIT` seconds in a row,
  the store is reported locked.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path

from hookd.store.errors import LOCK_WAIT
from hookd.store.interface import Health
from hookd.store.sqlite import db
from hookd.store.sqlite.inbox import Inbox

PROBE_INTERVAL = 1.0  # seconds between two probes
PROBE_BUSY = 0.2  # seconds the probe waits for the write lock


class SqliteHealth:
    """`hookd.store.interface.StoreHealth` for one SQLite file and its inbox."""

    def __init__(self, path: Path, inbox: Inbox, *, interval: float = PROBE_INTERVAL,
                 lock_wait: float = LOCK_WAIT) -> None:
        self.path = path
        self.inbox = inbox
        self.interval = interval
        self.lock_wait = lock_wait
        self._probe_error: str | None = None
        self._checked_at = 0.0
        self._locked_since: float | None = None
        self._conn: sqlite3.Connection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.closed = False

    def state(self) -> Health:
        error = None
        if self.closed:
            error = "the store is closed"
        elif not self.inbox.healthy:
            error = self.inbox.last_error or "the inbox is closed"
        elif self.inbox.stats.write_error is not None:
            error = self.inbox.stats.write_error
        elif self._probe_error is not None:
            error = self._probe_error
        return Health(error is None, error, self._checked_at or time.time(),
                      db.wal_bytes(self.path))

    # ------------------------------------------------------------------ the probe

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="hookd-store-health",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self.closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _loop(self) -> None:
        try:
            while True:
                now = time.time()
                self._probe_error = self._look(now)
                self._checked_at = now
                if self._stop.wait(self.interval):
                    return
        finally:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()

    def _look(self, now: float) -> str | None:
        path = self.path
        if path.exists() and not os.access(path, os.W_OK):
            return f"{path} is not writable"
        try:
            fs = os.statvfs(path.parent)
        except OSError as exc:
            return f"cannot examine {path.parent}: {exc}"
        if fs.f_bavail == 0:
            return f"no space left on the device of {path.parent}"
        if self._lock_taken():
            self._locked_since = None
            return None
        if self._locked_since is None:
            self._locked_since = now
        held = now - self._locked_since
        if held >= self.lock_wait:
            return f"the store's write lock has been held by another process for {held:.0f} s"
        return None

    def _lock_taken(self) -> bool:
        """Take and release the write lock (a connection of the probe thread's own)."""
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self.path, timeout=PROBE_BUSY,
                                             isolation_level=None)
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("ROLLBACK")
            return True
        except sqlite3.Error:
            return False
