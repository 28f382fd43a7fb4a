"""The inbox engine in a child process (``inbox.mode: process``; opt-in, see `hookd.inbox`).

Why: see `hookd.inbox`. The parent (`ProcessLink`) and the child (`child_main`) share one
Unix socket pair; each message is a 4-byte length and a pickle:

    parent → child   ("options", {...}) once, then ("jobs", [job tuples]) per batch,
                     ("stop",) to finish what is queued and exit
    child → parent   ("ready", replayed) or ("failed", reason) after start;
                     ("results", results, commits, error, stats) as jobs finish;
                     ("closed", stats) before exiting

On the loop, sending is a non-blocking ``send`` (what does not fit waits in a buffer
flushed when the socket is writable) and results are read by a reader callback, so the
loop never blocks on the child. When the parent dies, even by kill -9, the child reads
end-of-file, finishes and syncs what it has, and exits; nothing it answered is lost, and
the next engine replays the log of one that was itself killed. When the child dies the
parent refuses the requests it held (503, retried by upstreams) and starts a new child
with the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hookd.inbox_engine import CommitInfo, Engine, InboxStats, Job, Result
from hookd.store.deliveries import NewDelivery

log = logging.getLogger("hookd.inbox")

_LEN = struct.Struct("!I")
SOCKET_BUFFER = 4 * 1024 * 1024
START_TIMEOUT = 60.0  # seconds for the child to start (a replay after a crash included)


def _frame(message: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


def _split(buffer: bytearray) -> list[tuple[Any, ...]]:
    """Take the complete messages off the front of `buffer`."""
    messages: list[tuple[Any, ...]] = []
    pos = 0
    while len(buffer) - pos >= 4:
        (size,) = _LEN.unpack_from(buffer, pos)
        if len(buffer) - pos - 4 < size:
            break
        messages.append(pickle.loads(buffer[pos + 4:pos + 4 + size]))
        pos += 4 + size
    del buffer[:pos]
    return messages


def _job_tuple(job: Job, check: int | None) -> tuple[Any, ...]:
    """A job as plain data (pickles in half the time of the dataclasses); `check` is the
    key of its schema check, sent to the child once ("schema" message)."""
    deliveries = [(d.subscription_id, d.flow, d.received_at, d.headers, d.body, d.event,
                   d.dedup_key, d.flags, d.item) for d in job.deliveries]
    return (job.id, job.kind, deliveries, job.dedup_key,
            job.subscription_id, job.when, job.now, job.cutoff, job.examine, check, job.policy,
            job.batch)


def _job(fields: tuple[Any, ...], schemas: dict[int, Any]) -> Job:
    (id_, kind, deliveries, dedup_key, subscription_id, when, now, cutoff, examine, check,
     policy, batch) = fields
    return Job(id_, kind, [NewDelivery(*d) for d in deliveries], dedup_key, subscription_id,
               when, now, cutoff, examine, schemas.get(check) if check is not None else None,
               policy, batch)


class ProcessLink:
    """The parent's end: a `hookd.inbox.Link` to an engine in a child process."""

    def __init__(self, db_path: Path, on_results: Callable[..., None],
                 on_lost: Callable[[str], None], *, max_batch: int = 2000,
                 log_format: str | None = None, log_level: str | None = None) -> None:
        self._options = {"db_path": str(db_path), "max_batch": max_batch,
                         "log_format": log_format, "log_level": log_level}
        self._on_results = on_results
        self._on_lost = on_lost
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out = bytearray()  # not yet accepted by the socket
        self._in = bytearray()
        self._closing = False
        # Schema checks the child has been sent: id → (key, check); the check is held so
        # that its id is not reused while the key stands for it.
        self._checks: dict[int, tuple[int, Any]] = {}

    def start(self) -> int:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for s in (parent, child):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        try:
            # A fresh interpreter (not multiprocessing): nothing of the parent's threads,
            # sockets or __main__ is inherited.
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "from hookd.inbox_process import child_main; child_main()",
                 str(child.fileno())],
                pass_fds=(child.fileno(),), close_fds=True,
            )
        finally:
            child.close()
        self._sock = parent
        parent.sendall(_frame(("options", self._options)))
        parent.settimeout(START_TIMEOUT)
        try:
            while True:
                messages = _split(self._in)
                if messages:
                    break
                data = parent.recv(65536)
                if not data:
                    raise OSError("the inbox writer process exited at start")
                self._in += data
        except BaseException:
            self._kill()
            raise
        first = messages[0]
        if first[0] != "ready":
            self._kill()
            raise OSError(f"the inbox writer cannot start: {first[1]}")
        parent.setblocking(False)
        return int(first[1])

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = self._sock
        if sock is None or loop is self._loop:
            return
        old = self._loop
        if old is not None and not old.is_closed():
            old.remove_reader(sock)
            old.remove_writer(sock)
        self._loop = loop
        loop.add_reader(sock, self._readable)
        if self._out:
            loop.add_writer(sock, self._flush)

    def send(self, jobs: list[Job]) -> None:
        if self._sock is None:
            raise OSError("the inbox writer process is not running")
        pending = bool(self._out)
        tuples = []
        for job in jobs:
            key = None
            if job.check is not None:
                known = self._checks.get(id(job.check))
                if known is None or known[1] is not job.check:
                    known = (len(self._checks) + 1, job.check)
                    self._checks[id(job.check)] = known
                    self._out += _frame(("schema", known[0], job.check.source))
                key = known[0]
            tuples.append(_job_tuple(job, key))
        self._out += _frame(("jobs", tuples))
        if not pending:
            self._flush()

    def _flush(self) -> None:
        sock, loop = self._sock, self._loop
        if sock is None:
            return
        try:
            while self._out:
                sent = sock.send(self._out)
                del self._out[:sent]
        except BlockingIOError:
            pass
        except OSError as exc:
            self._gone(f"cannot reach the inbox writer process: {exc}")
            return
        if loop is not None and not loop.is_closed():
            if self._out:
                loop.add_writer(sock, self._flush)
            else:
                loop.remove_writer(sock)

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError as exc:
            data, reason = b"", str(exc)
        else:
            reason = "the inbox writer process exited"
        if not data:
            self._gone(reason)
            return
        self._in += data
        for message in _split(self._in):
            if message[0] == "results":
                _, results, commits, error, stats = message
                self._on_results(results, commits, error, InboxStats(*stats), 0.0)

    def _gone(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._detach()
        self._kill()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._on_lost(reason)

    def close(self, timeout: float) -> InboxStats | None:
        """Ask the child to finish and exit; its last statistics, if it said them."""
        self._closing = True
        sock = self._sock
        self._detach()
        final: InboxStats | None = None
        if sock is None:
            return None
        try:
            sock.setblocking(True)
            sock.settimeout(timeout)
            sock.sendall(bytes(self._out) + _frame(("stop",)))
            self._out.clear()
            deadline = time.monotonic() + timeout
            # Read to the end (the child may still send results): it never blocks on us.
            while time.monotonic() < deadline:
                data = sock.recv(1 << 20)
                if not data:
                    break
                self._in += data
                for message in _split(self._in):
                    if message[0] in ("results", "closed"):
                        final = InboxStats(*message[-1])
        except OSError as exc:
            log.warning("the inbox writer did not stop cleanly", extra={"error": str(exc)})
        finally:
            sock.close()
            self._sock = None
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(max(1.0, timeout))
            except subprocess.TimeoutExpired:
                log.warning("the inbox writer process did not exit; killing it")
                self._kill()
        return final

    def _detach(self) -> None:
        sock, loop = self._sock, self._loop
        if sock is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                loop.remove_reader(sock)
                loop.remove_writer(sock)
        self._loop = None

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


# --------------------------------------------------------------------------- the child


def child_main() -> None:
    """Entry point of the child interpreter (see `ProcessLink.start`)."""
    # The parent handles SIGINT/SIGTERM and tells us to stop; its death shows as EOF.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    stream = sock.makefile("rb")
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        data = _frame(message)
        with send_lock:
            sock.sendall(data)

    def deliver(results: list[Result], commits: list[CommitInfo], error: str | None,
                stats: InboxStats) -> None:
        with contextlib.suppress(OSError):  # the parent is gone: nobody waits for these
            send(("results", results, commits, error, tuple(vars(stats).values())))

    first = _read(stream)
    options: dict[str, Any] = first[1] if first else {}
    from hookd import logs

    logs.configure(options.get("log_format") or "auto", options.get("log_level") or "info")
    engine = Engine(Path(options["db_path"]), deliver, max_batch=int(options["max_batch"]))
    try:
        replayed = engine.start(writer_thread=False)
    except Exception as exc:
        send(("failed", str(exc)))
        return
    send(("ready", replayed))
    # This thread is the writer: it reads the socket itself (one hand-off fewer per
    # batch than a reader thread feeding a writer thread, each costing a wake-up).
    engine.serve(_Reader(sock))
    engine.close()
    with contextlib.suppress(OSError):
        send(("closed", tuple(vars(engine.stats).values())))
        sock.shutdown(socket.SHUT_WR)
    os._exit(0)  # the engine's threads are done; skip interpreter teardown


class _Reader:
    """The child's `hookd.inbox_engine.Source`: jobs from the parent's messages."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        # The parent sends nothing between "options" and our "ready": `stream` (which
        # read the options) holds nothing more, and the socket is read directly from here.
        self._buffer = bytearray()
        self._schemas: dict[int, Any] = {}
        self._done = False

    def __call__(self, timeout: float | None) -> list[Job] | None:
        jobs: list[Job] = []
        while True:
            for message in _split(self._buffer):
                kind = message[0]
                if kind == "jobs":
                    jobs += [_job(fields, self._schemas) for fields in message[1]]
                elif kind == "schema":
                    from hookd.routing import compile_schema

                    self._schemas[message[1]] = compile_schema(message[2])
                elif kind == "stop":
                    self._done = True
            if jobs:
                return jobs
            if self._done:
                return None
            # Wait for the first message; then, while one is half read, for its rest.
            ready, _, _ = select.select([self._sock], [], [], None if self._buffer else timeout)
            if not ready:
                return []
            try:
                data = self._sock.recv(1 << 20)
            except OSError:
                data = b""
            if not data:  # the parent is gone: finish what was received
                self._done = True
                continue
            self._buffer += data


def _read(stream: Any) -> tuple[Any, ...] | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = _LEN.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    message: tuple[Any, ...] = pickle.loads(data)
    return message
