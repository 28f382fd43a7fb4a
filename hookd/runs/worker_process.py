"""Run the pipeline worker in a child process, so runs use a CPU core of their own.

CPython executes one thread at a time: in a single process, every run's templating and
run-history writes take turns with the callback listener's request handling. With the
worker in a child process the listener (parent) and the pipelines (child) run in
parallel on two cores; they share only the store, which both open (the durable inbox is the queue between
them), each with its own connections.

`ProcessWorker` is a `hookd.runs.handle.WorkerHandle` like `hookd.runs.worker.Worker` —
`start()`, `poke()` (from any thread), `stop(timeout)` — and forwards them over a pipe. The child
keeps the config the parent last sent; the parent sends the current config at start
and whenever its source returns a different object (checked on every poke and twice a
second), so reloads reach the child and in-flight runs keep the config they started
with, exactly as in-process. The child dies with the parent (Linux ``PR_SET_PDEATHSIG``),
so a kill -9 of hookd cannot leave a second worker running beside the restarted one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypedDict

from hookd.config import model
from hookd.runs.handle import ConfigSource

log = logging.getLogger("hookd.runs.worker")

CONFIG_CHECK_INTERVAL = 0.5


class ChildOptions(TypedDict):
    """The worker's settings, the first message to the child (`ProcessWorker.__init__`)."""

    state_dir: Path | None
    limit: int | None
    poll_interval: float
    lease: float
    log_format: str | None
    log_level: str | None


class ProcessWorker:
    """A `hookd.runs.worker.Worker` in a child process (see module docstring)."""

    def __init__(self, source: ConfigSource, *,
                 state_dir: Path | None = None, limit: int | None = None,
                 poll_interval: float = 0.5, lease: float = model.CLAIM_LEASE,
                 log_format: str | None = None, log_level: str | None = None) -> None:
        if callable(source):
            self._get_config: Callable[[], model.Config | None] = source
        else:
            self._get_config = lambda: source.config
        self._options: ChildOptions = {"state_dir": state_dir, "limit": limit,
                                       "poll_interval": poll_interval, "lease": lease,
                         "log_format": log_format, "log_level": log_level}
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._sent: model.Config | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # A fresh interpreter (not multiprocessing): nothing of the parent's threads,
        # sockets or __main__ is inherited. Messages are length-prefixed pickles on stdin.
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from hookd.runs.worker_process import child_main; child_main()"],
            stdin=subprocess.PIPE, close_fds=True,
        )
        self._send(("options", self._options))
        self._send_config(force=True)
        self._watch = asyncio.create_task(self._watch_config())

    def _send(self, message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message)
        with self._lock:
            pipe = self._proc.stdin if self._proc is not None else None
            if pipe is None or pipe.closed:
                return
            with contextlib.suppress(OSError, ValueError):
                pipe.write(struct.pack("!I", len(data)) + data)
                pipe.flush()

    def _send_config(self, *, force: bool = False) -> None:
        config = self._get_config()
        if config is not None and (force or config is not self._sent):
            self._sent = config
            self._send(("config", config))

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(CONFIG_CHECK_INTERVAL)
            self._send_config()

    def poke(self) -> None:
        """Wake the child now (safe from any thread)."""
        self._send_config()
        self._send(("poke",))

    async def stop(self, timeout: float | None = None) -> None:
        """Ask the child to stop gracefully (see `Worker.stop`); kill it if it overstays."""
        if timeout is None:
            config = self._get_config()
            timeout = config.settings.shutdown_timeout if config is not None else 30.0
        if self._watch is not None:
            self._watch.cancel()
        self._send(("stop", timeout))
        proc = self._proc
        if proc is None:
            return
        try:
            await asyncio.to_thread(proc.wait, timeout + 10)
        except subprocess.TimeoutExpired:
            log.warning("worker process did not stop in time; killing it")
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)
        with self._lock, contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


# --------------------------------------------------------------------------- the child


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _read(stream: IO[bytes]) -> tuple[Any, ...]:
    head = stream.read(4)
    if len(head) < 4:
        raise EOFError
    (size,) = struct.unpack("!I", head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    message: tuple[Any, ...] = pickle.loads(data)
    return message


def child_main() -> None:
    """Entry point of the child interpreter (see `ProcessWorker.start`)."""
    _die_with_parent()
    # The parent handles SIGINT/SIGTERM and tells us to stop over the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stream = sys.stdin.buffer
    options: ChildOptions = _read(stream)[1]
    first = _read(stream)
    config: model.Config = first[1]
    from hookd.telemetry import logs

    logs.configure(options["log_format"] or config.settings.log_format,
                   options["log_level"] or config.settings.log_level)
    asyncio.run(_child_loop(stream, config, options))


async def _child_loop(stream: IO[bytes], config: model.Config, options: ChildOptions) -> None:
    from hookd.runs.worker import Worker

    holder = {"config": config}
    worker = Worker(lambda: holder["config"], state_dir=options["state_dir"],
                    limit=options["limit"], poll_interval=options["poll_interval"] or 0.5,
                    lease=options["lease"])
    await worker.start()
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[float] = loop.create_future()

    def on_message(message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "config":
            holder["config"] = message[1]
        elif kind == "poke":
            worker.poke()
        elif kind == "stop" and not stop.done():
            stop.set_result(float(message[1]))

    def reader() -> None:
        while True:
            try:
                message = _read(stream)
            except (EOFError, OSError):
                message = ("stop", 5.0)  # the parent went away
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(on_message, message)
            if message[0] == "stop":
                return

    threading.Thread(target=reader, name="hookd-worker-pipe", daemon=True).start()
    timeout = await stop
    await worker.stop(timeout)
