"""The inbox log: append-only segment files that make a delivery durable before SQLite does.

Why it exists: the inbox must not answer 2xx before a delivery survives a power loss. With
SQLite alone that means *insert, commit, then fsync the WAL* — one after the other, about
2 ms plus 2 ms for a batch of twenty 8 KB pushes, and every request of the batch waits for
both. The log lets the two overlap: the writer appends the batch's rows to the current
segment (one ``write``), the sync thread fdatasyncs the segment while the writer inserts
the same rows into SQLite (``synchronous=NORMAL``, no fsync), and a request is answered
once both are done. The SQLite rows stay the record everybody reads; the log only covers
the window until SQLite's own WAL is synced.

A segment is retired (unlinked) once the WAL has been fdatasynced after the last commit
whose rows it holds: from then on SQLite has them durably. The inbox rotates to a fresh
segment about once a second, so at most a few seconds of deliveries are ever in the log.

Crash recovery (`replay`): at start, each segment no live process holds (every open
segment is ``flock``ed by its writer) is read frame by frame, its rows are inserted with
``INSERT OR IGNORE`` (a row that reached SQLite stays as it is), the WAL is synced, and
the segment is deleted. A frame cut off by the crash fails its length or CRC check and
ends the segment: its request was never answered.

Frame layout (little-endian): ``b"HKD1"``, meta length (u32), body length (u32), CRC-32 of
meta + body (u32), then the meta (JSON array of the row's other columns) and the body.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from hookd.store.deliveries import PreparedRow

__all__ = ["PreparedRow", "Segment", "create", "decode", "encode", "replay", "retire"]

log = logging.getLogger("hookd.inbox")

MAGIC = b"HKD1"
_HEAD = struct.Struct("<4sIII")
LOG_DIR = "inbox"  # beside the database file
SUFFIX = ".log"

# What SQLite itself calls for synchronous=FULL on Linux: data and size, not timestamps.
datasync = getattr(os, "fdatasync", os.fsync)


# ---------------------------------------------------------------------------- frames


def encode(rows: Sequence[PreparedRow]) -> bytes:
    """The frames of `rows`, ready for one ``write``."""
    parts: list[bytes] = []
    for row in rows:
        body = row[5]
        meta = orjson.dumps([row[0], row[1], row[2], row[3], row[4], row[6], row[7], row[8],
                             row[9]])
        crc = zlib.crc32(body, zlib.crc32(meta))
        parts += (_HEAD.pack(MAGIC, len(meta), len(body), crc), meta, body)
    return b"".join(parts)


def decode(data: bytes) -> tuple[list[PreparedRow], int]:
    """The rows of the complete, intact frames at the start of `data`, and how many bytes
    they take; reading stops at the first frame that is cut off or damaged."""
    rows: list[PreparedRow] = []
    pos, size = 0, len(data)
    while pos + _HEAD.size <= size:
        magic, meta_len, body_len, crc = _HEAD.unpack_from(data, pos)
        start = pos + _HEAD.size
        end = start + meta_len + body_len
        if magic != MAGIC or end > size:
            break
        meta = data[start:start + meta_len]
        body = data[start + meta_len:end]
        if zlib.crc32(body, zlib.crc32(meta)) != crc:
            break
        try:
            m = orjson.loads(meta)
            row: PreparedRow = (str(m[0]), str(m[1]), str(m[2]), float(m[3]), str(m[4]), body,
                                m[5], m[6], m[7], str(m[8]))
        except (orjson.JSONDecodeError, IndexError, TypeError, ValueError):
            break
        rows.append(row)
        pos = end
    return rows, pos


# ---------------------------------------------------------------------------- segments


@dataclass
class Segment:
    """One open segment file, locked by its writer for as long as it is open."""

    path: Path
    fd: int
    size: int = 0
    last_seq: int = 0  # the inbox's log sequence number of the last batch written here
    opened: float = 0.0  # time.monotonic() when first written to

    def append(self, data: bytes) -> int:
        """Write `data` at the end; returns the offset it starts at."""
        start = self.size
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
                self.size += written
        except OSError:
            self.truncate(start)
            raise
        return start

    def truncate(self, size: int) -> None:
        """Drop what was written after `size` (a batch SQLite refused)."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, size)
            self.size = size

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def log_dir(db_path: Path) -> Path:
    return Path(db_path).parent / LOG_DIR


def create(directory: Path) -> Segment:
    """A new, empty, locked segment whose directory entry is already durable."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for attempt in range(1000):
        name = f"{time.time_ns():020d}-{os.getpid()}-{attempt}{SUFFIX}"
        path = directory / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except FileExistsError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        sync_dir(directory)
        return Segment(path, fd)
    raise OSError(f"cannot create an inbox log segment in {directory}")


def retire(segment: Segment) -> None:
    """Delete a segment whose rows SQLite holds durably (the WAL was synced after them)."""
    with contextlib.suppress(FileNotFoundError):
        segment.path.unlink()
    segment.close()


def sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_wal(db_path: Path) -> None:
    """fdatasync the database's ``-wal`` file: every commit made before this call is
    durable afterwards, whether its frames are still in the WAL or a checkpoint already
    copied them into the database (SQLite syncs the database file after a checkpoint).

    Only the ``-wal`` file is opened here, never the database file itself: closing any
    descriptor of a file drops every POSIX lock the process holds on it, SQLite's
    included (SQLite locks the database file and ``-shm``, not ``-wal``).
    """
    try:
        fd = os.open(Path(str(db_path) + "-wal"), os.O_RDONLY)
    except FileNotFoundError:
        return  # no WAL: every commit is in the database file, synced by SQLite
    try:
        datasync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- recovery


def orphans(directory: Path) -> Iterator[tuple[Path, int]]:
    """Segments no live process holds, each opened and locked: (path, fd)."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its writer is alive
            continue
        yield path, fd


def replay(db_path: Path, conn: sqlite3.Connection) -> int:
    """Insert the rows of every orphaned segment that SQLite lacks, then delete the
    segments. Returns how many rows were missing (deliveries a crash would have lost)."""
    directory = log_dir(db_path)
    found = restored = 0
    done: list[tuple[Path, int]] = []
    try:
        for path, fd in orphans(directory):
            done.append((path, fd))
            with open(fd, "rb", closefd=False) as f:
                data = f.read()
            rows, used = decode(data)
            if used < len(data):
                log.warning("inbox log: ignored a cut-off tail (never answered)",
                            extra={"segment": path.name, "bytes": len(data) - used})
            found += len(rows)
            if rows:
                restored += _insert_missing(conn, rows)
        if done:
            sync_wal(db_path)
            for path, _ in done:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            sync_dir(directory)
    finally:
        for _, fd in done:
            os.close(fd)
    if found:
        log.info("inbox log replayed",
                 extra={"segments": len(done), "rows": found, "restored": restored})
    return restored


def _insert_missing(conn: sqlite3.Connection, rows: list[PreparedRow]) -> int:
    now = time.time()
    before = conn.total_changes
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT OR IGNORE INTO deliveries (id, subscription_id, flow, received_at, headers,"
            " body, event, dedup_key, item, flags, updated_at, status, attempts)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,'queued',0)",
            [(*row, now) for row in rows],
        )
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
        raise
    return conn.total_changes - before
