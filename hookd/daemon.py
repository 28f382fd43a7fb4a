"""The long-running service: one process, one event loop, every part wired together.

`hookd run` loads and validates the config, opens the store, starts the public
(callback) and admin listeners as two uvicorn servers on one loop, starts the pipeline
worker, tells systemd it is ready, reconciles once and then lives on events:

- config changes (watchfiles) and ``SIGHUP`` → load → validate → swap → reconcile. A
  config that does not validate is rejected as a whole: the last good one keeps running,
  nothing is deleted, the errors are logged, kept for ``/readyz`` and ``/api/status``
  and counted in ``hookd_config_reloads_total{outcome="rejected"}``;
- the scheduler (apscheduler 3) → periodic reconcile with jitter, retry of failed
  subscriptions, run-history pruning; no job overlaps itself;
- ``SIGTERM``/``SIGINT`` → ``STOPPING=1``, the public listener answers 503 while the
  worker finishes in-flight steps (up to ``shutdown_timeout``), the store is flushed,
  exit 0. Upstream hooks are left in place: a restart must not churn upstream.

hookd owns the signals, not uvicorn: a uvicorn server exits on SIGINT by itself, which
would skip the drain. The other parts are reached through a few small functions below
(marked "seam") so that what each part expects of the daemon is visible in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import importlib
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hookd import __version__, logs, reload, revision, sdnotify, status
from hookd.diagnostics import Diagnostic, has_errors

if TYPE_CHECKING:
    import sqlite3

    import uvicorn

    from hookd.model import Config

log = logging.getLogger("hookd.daemon")

EXIT_OK, EXIT_INVALID_CONFIG, EXIT_IO = 0, 1, 2
# How long to keep "recent failures" and how many to show.
RECENT_FAILURES = 10
# Failed subscriptions are retried after base * 2**n seconds (n = consecutive failures
# seen by this process), capped; the periodic reconcile repairs the rest.
RETRY_BASE, RETRY_MAX = 30.0, 1800.0
# Returned by a seam whose part is not built (yet): the daemon skips that duty.
NOT_AVAILABLE: Any = object()


# --------------------------------------------------------------------------- loading


def load(
    directory: Path, state_dir: Path | None = None
) -> tuple[Config | None, list[Diagnostic], str]:
    """Load and validate; the config (None when invalid), all diagnostics, the revision."""
    from hookd.config import load_config

    config, diagnostics = load_config(directory)
    if config is not None and state_dir is not None:
        settings = dataclasses.replace(config.settings, state_dir=Path(state_dir).resolve())
        config = dataclasses.replace(config, settings=settings)
    exclude = [config.settings.state_dir] if config is not None else []
    if state_dir is not None:
        exclude.append(state_dir)
    rev = (config.revision if config is not None else "") or revision.config_revision(
        directory, exclude
    )
    if config is not None and not config.revision:
        config = dataclasses.replace(config, revision=rev)
    if has_errors(diagnostics):
        config = None
    return config, diagnostics, rev


def format_report(diagnostics: Sequence[Diagnostic], directory: Path) -> list[str]:
    """The lines `hookd check` prints: every problem (the loader sorts them), then a count."""
    base = Path(directory).absolute()
    lines = [d.format(relative_to=base) for d in diagnostics]
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    summary = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    lines.append(f"{directory}: {'ok' if not errors else 'failed'} ({summary})")
    return lines


def register_secrets(config: Config) -> None:
    """Mask every secret the config references in all log lines (see `hookd.logs`)."""
    from hookd import secrets
    from hookd.model import SecretRef

    values: list[Any] = [p for c in config.connections.values() for p in c.parameters.values()]
    values += [f.verify_secret for f in config.flows.values() if f.verify_secret is not None]
    for value in values:
        if isinstance(value, SecretRef):
            with contextlib.suppress(Exception):  # unresolvable: reported by the loader
                logs.register_secret(secrets.resolve_value(value))


# --------------------------------------------------------------------------- ASGI wrappers


class Draining:
    """Wraps the public app: 503 with ``Retry-After`` for every request while stopping."""

    def __init__(self, app: Any, is_draining: Callable[[], bool]) -> None:
        self.app = app
        self.is_draining = is_draining

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.is_draining():
            body = b'{"error": "shutting down"}'
            await send({
                "type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", b"5"),
                            (b"content-length", str(len(body)).encode())],
            })
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class AdminRoutes:
    """Wraps the admin app: the daemon answers ``/readyz``, ``/api/status`` and appends
    its own series to ``/metrics``; everything else goes to the admin app."""

    def __init__(self, app: Any | None, daemon: Daemon) -> None:
        self.app = app
        self.daemon = daemon

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if self.app is not None:
                await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == "/readyz":
            code, doc = await self.daemon.readiness()
            await _send_json(send, code, doc)
        elif path == "/api/status":
            await _send_json(send, 200, status.document(await self.daemon.status_facts()))
        elif path == "/healthz" and self.app is None:
            await _send_json(send, 200, {"status": "ok"})
        elif path == "/metrics":
            await self._metrics(scope, receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        else:
            await _send_json(send, 404, {"error": "not found"})

    async def _metrics(self, scope: Any, receive: Any, send: Any) -> None:
        head: dict[str, Any] = {"status": 200, "headers": []}
        chunks: list[bytes] = []
        if self.app is not None:
            async def capture(message: Any) -> None:
                if message["type"] == "http.response.start":
                    head.update(message)
                elif message["type"] == "http.response.body":
                    chunks.append(message.get("body", b""))

            await self.app(scope, receive, capture)
        body = b"".join(chunks)
        if body and not body.endswith(b"\n"):
            body += b"\n"
        body += self.daemon.metrics_text().encode()
        headers = [(k, v) for k, v in head.get("headers", []) if k.lower() != b"content-length"]
        if not any(k.lower() == b"content-type" for k, _ in headers):
            headers.append((b"content-type", b"text/plain; version=0.0.4; charset=utf-8"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": head["status"], "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _send_json(send: Any, code: int, doc: Any) -> None:
    import json

    body = json.dumps(doc).encode()
    await send({
        "type": "http.response.start", "status": code,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


def _quiet_server(config: uvicorn.Config) -> uvicorn.Server:
    """A uvicorn server that leaves the signals to hookd."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

        def install_signal_handlers(self) -> None:  # uvicorn < 0.29
            return None

    return Server(config)


def inherited_socket(env: dict[str, str] | os._Environ[str]) -> socket.socket | None:
    """The public listener passed by systemd socket activation (fd 3), if any."""
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    if count < 1:
        return None
    return socket.socket(fileno=3)


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """State of one `hookd run`: the running config and everything built from it."""

    def __init__(
        self,
        directory: Path,
        config: Config,
        revision_: str,
        *,
        state_dir: Path | None = None,
        notifier: sdnotify.Notifier | None = None,
        env: dict[str, str] | None = None,
        loaded_hash: str = "",
    ) -> None:
        self.directory = Path(directory).absolute()
        self.config = config
        self.revision = revision_
        self.state_dir_override = state_dir
        self.env = dict(os.environ) if env is None else env
        self.notifier = notifier or sdnotify.Notifier(self.env)
        self.started_at = time.time()
        self.last_reload = status.ReloadOutcome(self.started_at, "start", True, revision_)
        # Content hash of the files behind the last load attempt (revision_ may be a commit).
        self.loaded_hash = loaded_hash or revision.content_hash(self.directory)
        self.reloads = {"applied": 1, "rejected": 0}
        self.reconciles = {"ok": 0, "error": 0}
        self.draining = False
        self.conn: sqlite3.Connection | None = None
        self.app_state: Any = None
        self.worker: Any = None
        self.server_secret = b""
        self._failures_seen: dict[str, int] = {}  # subscription id → consecutive failures
        self._next_retry: dict[str, float] = {}
        self._stop: asyncio.Event | None = None
        self._reload_lock: asyncio.Lock | None = None
        self._reconcile_lock: asyncio.Lock | None = None
        self._reconcile_pending = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._reconcile_lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._spawn_reload, "sighup")

        settings = self.config.settings
        try:
            self._open_store()
        except Exception as exc:
            log.error("cannot open the state store", extra={"state_dir": str(settings.state_dir),
                                                            "error": str(exc)})
            return EXIT_IO
        register_secrets(self.config)
        self.app_state = make_app_state(self)

        public_app = Draining(make_public_app(self.app_state), lambda: self.draining)
        admin_app = AdminRoutes(make_admin_app(self.app_state), self)
        servers = [
            self._server(public_app, settings.public.host, settings.public.port,
                         inherited_socket(self.env)),
            self._server(admin_app, settings.admin.host, settings.admin.port, None),
        ]
        serving = [asyncio.create_task(s.serve(), name="uvicorn") for s in servers]
        if not await self._wait_started(servers, serving):
            log.error("a listener failed to start (address in use or not allowed?)",
                      extra={"public": f"{settings.public.host}:{settings.public.port}",
                             "admin": f"{settings.admin.host}:{settings.admin.port}"})
            for s in servers:
                s.should_exit = True
            await asyncio.gather(*serving, return_exceptions=True)
            self._close_store()
            return EXIT_IO

        self.worker = await start_worker(self)
        summary = await self.summary()
        self.notifier.ready(summary)
        log.info("hookd is ready", extra={
            "version": __version__, "revision": self.revision, "flows": len(self.config.flows),
            "public": f"{settings.public.host}:{settings.public.port}",
            "admin": f"{settings.admin.host}:{settings.admin.port}", "summary": summary,
        })

        # After READY=1: nothing below is needed to accept deliveries.
        self._spawn(sdnotify.watchdog_loop(self.notifier), "watchdog")
        self._spawn(self._watch(), "watch")
        scheduler = self._start_scheduler()
        if settings.reconcile.on_start:
            self._spawn(self.reconcile("start"), "reconcile")

        await self._stop.wait()
        return await self._shutdown(servers, serving, scheduler)

    def stop(self, reason: str = "") -> None:
        """Begin a graceful shutdown (idempotent); a second SIGINT does not force it."""
        if self._stop is not None and not self._stop.is_set():
            log.info("stopping", extra={"signal": reason})
            self._stop.set()

    async def _shutdown(
        self, servers: list[uvicorn.Server], serving: list[asyncio.Task[Any]], scheduler: Any
    ) -> int:
        settings = self.config.settings
        self.notifier.stopping()
        self.draining = True
        if scheduler is not None:
            with contextlib.suppress(Exception):
                scheduler.shutdown(wait=False)
        for task in list(self._tasks):
            task.cancel()
        # In-flight steps finish; the rest stays queued in the store for the next start.
        try:
            await asyncio.wait_for(stop_worker(self.worker), settings.shutdown_timeout)
        except TimeoutError:
            log.warning("in-flight steps did not finish within shutdown_timeout; they resume "
                        "at next start", extra={"shutdown_timeout": settings.shutdown_timeout})
        except Exception:
            log.exception("error while stopping the worker")
        for s in servers:
            s.should_exit = True
        _done, pending = await asyncio.wait(serving, timeout=5)
        for s in servers:
            s.force_exit = True
        if pending:
            await asyncio.wait(pending, timeout=2)
        with contextlib.suppress(Exception):
            await close_app_state(self.app_state)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._close_store()
        log.info("stopped", extra={"uptime": round(time.time() - self.started_at, 3)})
        return EXIT_OK

    def _server(
        self, app: Any, host: str, port: int, sock: socket.socket | None
    ) -> uvicorn.Server:
        import uvicorn

        kwargs: dict[str, Any] = {"fd": sock.fileno()} if sock is not None else {
            "host": host, "port": port}
        config = uvicorn.Config(
            app, log_config=None, access_log=False,  # the callback URL path holds a token
            lifespan="auto", server_header=False,
            timeout_graceful_shutdown=max(1, int(self.config.settings.shutdown_timeout)),
            **kwargs,
        )
        return _quiet_server(config)

    async def _wait_started(
        self, servers: list[uvicorn.Server], serving: list[asyncio.Task[Any]]
    ) -> bool:
        while not all(s.started for s in servers):
            if any(t.done() for t in serving):
                return False
            await asyncio.sleep(0.005)
        return True

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ store

    def _open_store(self) -> None:
        from hookd import tokens
        from hookd.store import db

        state_dir = self.config.settings.state_dir
        self.conn = db.open_db(state_dir, check_same_thread=False)
        self.server_secret = tokens.load_or_create_server_secret(state_dir)
        requeued = requeue_running(self.conn)
        if requeued:
            log.info("deliveries interrupted by the last stop are queued again",
                     extra={"deliveries": requeued})

    def _close_store(self) -> None:
        if self.conn is None:
            return
        with contextlib.suppress(Exception):
            # Fold the WAL into the main file: a clean stop leaves one self-contained file.
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()
        self.conn = None

    # ------------------------------------------------------------------ reload

    def _exclude(self) -> list[Path]:
        """Directories inside the config directory that are not config (the state)."""
        exclude = [self.config.settings.state_dir]
        if self.state_dir_override is not None:
            exclude.append(self.state_dir_override)
        return exclude

    def _spawn_reload(self, trigger: str) -> None:
        self._spawn(self.reload(trigger), "reload")

    async def _watch(self) -> None:
        import watchfiles

        exclude = self._exclude()
        accept = reload.ConfigFilter(self.directory, exclude)
        # Files changed between the first load and the watcher's start would go unseen.
        self._spawn(self._catch_up(exclude), "catch-up")
        async for changes in watchfiles.awatch(
            self.directory, watch_filter=accept, step=reload.STEP_MS,
            debounce=reload.DEBOUNCE_MS, recursive=True, ignore_permission_denied=True,
        ):
            log.info("config files changed",
                     extra={"files": reload.changed_paths(changes, self.directory)})
            await self.reload("watch")

    async def _catch_up(self, exclude: list[Path]) -> None:
        await asyncio.sleep(reload.STEP_MS / 1000 * 2)
        now = await asyncio.to_thread(revision.content_hash, self.directory, exclude)
        if now != self.loaded_hash:
            await self.reload("watch")

    async def reload(self, trigger: str) -> bool:
        """Load → validate → swap → reconcile. False when the new config was rejected."""
        assert self._reload_lock is not None
        async with self._reload_lock:
            content = await asyncio.to_thread(
                revision.content_hash, self.directory, self._exclude())
            if trigger == "watch" and content == self.loaded_hash:
                return self.last_reload.ok  # touched or already loaded: nothing to do
            self.loaded_hash = content
            self.notifier.reloading()
            try:
                config, diagnostics, rev = await asyncio.to_thread(
                    load, self.directory, self.state_dir_override
                )
            except Exception as exc:  # a loader bug must not take the daemon down
                log.exception("config reload crashed; keeping the running config")
                config, diagnostics, rev = None, [], self.revision
                error = f"internal error while loading: {type(exc).__name__}: {exc}"
                diagnostics = [Diagnostic(self.directory, 0, 0, "error", error)]
            now = time.time()
            if config is None:
                errors = tuple(d.format(relative_to=self.directory)
                               for d in diagnostics if d.is_error)
                self.last_reload = status.ReloadOutcome(now, trigger, False, rev, errors)
                self.reloads["rejected"] += 1
                for line in errors:
                    log.error("config rejected: %s", line, extra={"revision": rev})
                log.error("config rejected; the last good config keeps running",
                          extra={"trigger": trigger, "rejected_revision": rev,
                                 "running_revision": self.revision, "errors": len(errors)})
                self.notifier.ready(await self.summary())
                return False
            self._warn_restart_needed(config)
            register_secrets(config)
            self.config = config
            self.revision = rev
            swap_config(self.app_state, config)
            self.last_reload = status.ReloadOutcome(now, trigger, True, rev)
            self.reloads["applied"] += 1
            log.info("config applied", extra={"trigger": trigger, "revision": rev,
                                              "flows": len(config.flows)})
            self.notifier.ready(await self.summary())
        self._spawn(self.reconcile("reload"), "reconcile")
        return True

    def _warn_restart_needed(self, new: Config) -> None:
        old = self.config.settings
        for key in ("public", "admin", "state_dir", "workers"):
            if getattr(old, key) != getattr(new.settings, key):
                log.warning("setting changed; it takes effect after a restart",
                            extra={"setting": key})

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, reason: str) -> None:
        """One reconcile at a time; a request during a pass runs one more pass after it."""
        assert self._reconcile_lock is not None
        if self._reconcile_lock.locked():
            self._reconcile_pending = True
            return
        async with self._reconcile_lock:
            while True:
                self._reconcile_pending = False
                config = self.config  # the pass works on one config from start to end
                started = time.monotonic()
                try:
                    report = await reconcile_once(self, config)
                    if report is NOT_AVAILABLE:
                        return
                    self.reconciles["ok"] += 1
                    log.info("reconciled", extra={
                        "reason": reason, "revision": self.revision,
                        "seconds": round(time.monotonic() - started, 3),
                        **({"report": report} if report else {})})
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.reconciles["error"] += 1
                    log.error("reconcile failed", extra={"reason": reason, "error": str(exc)},
                              exc_info=log.isEnabledFor(logging.DEBUG))
                self._after_reconcile()
                self.notifier.status(await self.summary())
                if not self._reconcile_pending:
                    break
                reason = "coalesced"

    def _after_reconcile(self) -> None:
        from hookd import tokens

        now = time.time()
        for row in subscription_rows(self):
            # Callback tokens and signing secrets end up in URLs and errors: mask them.
            logs.register_secret(getattr(row, "secret", None))
            logs.register_secret(tokens.callback_token(self.server_secret, row.id))
            if row.status in status.FAILING_STATES:
                n = self._failures_seen.get(row.id, 0)
                self._failures_seen[row.id] = n + 1
                delay = min(RETRY_MAX, RETRY_BASE * 2**n) * random.uniform(0.8, 1.2)
                self._next_retry[row.id] = now + delay
            else:
                self._failures_seen.pop(row.id, None)
                self._next_retry.pop(row.id, None)

    async def retry_failed(self) -> None:
        """Scheduled: reconcile again when a failed subscription's backoff has elapsed."""
        now = time.time()
        if any(at <= now for at in self._next_retry.values()):
            await self.reconcile("retry")

    async def prune(self) -> None:
        """Scheduled: drop run history and deliveries older than ``retention``."""
        try:
            pruned = await asyncio.to_thread(prune_history, self)
        except Exception as exc:
            log.error("pruning run history failed", extra={"error": str(exc)})
            return
        if pruned:
            log.info("pruned history", extra=pruned)

    def _start_scheduler(self) -> Any:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        policy = self.config.settings.reconcile
        scheduler = AsyncIOScheduler(job_defaults={
            "max_instances": 1, "coalesce": True, "misfire_grace_time": None})
        scheduler.add_job(self.reconcile, "interval", args=["scheduled"], id="reconcile",
                          seconds=policy.interval, jitter=policy.interval * policy.jitter)
        scheduler.add_job(self.retry_failed, "interval", id="retry", seconds=15, jitter=5)
        scheduler.add_job(self.prune, "interval", id="prune", minutes=60, jitter=300,
                          next_run_time=None)
        scheduler.start()
        # First prune a minute after start, not in the middle of startup.
        with contextlib.suppress(Exception):
            from datetime import datetime, timedelta

            scheduler.modify_job("prune", next_run_time=datetime.now().astimezone()
                                 + timedelta(seconds=60))
        return scheduler

    # ------------------------------------------------------------------ status

    async def summary(self) -> str:
        counts = subscription_counts(self)
        line = status.summary_line(sum(f.enabled for f in self.config.flows.values()), counts)
        if not self.last_reload.ok:
            line += f"; config {self.last_reload.revision} rejected"
        return line

    async def status_facts(self) -> status.StatusFacts:
        rows = subscription_rows(self)
        failures = [
            status.Failure("subscription", r.flow, r.id, r.last_error or r.status,
                           getattr(r, "updated_at", None))
            for r in rows if r.status in status.FAILING_STATES
        ]
        failures += recent_failed_runs(self)
        failures.sort(key=lambda f: f.at or 0, reverse=True)
        return status.StatusFacts(
            version=__version__, started_at=self.started_at, now=time.time(),
            revision=self.revision,
            flows=sum(f.enabled for f in self.config.flows.values()),
            last_reload=self.last_reload, subscriptions=subscription_counts(self),
            inbox_depth=inbox_depth(self), runs_last_hour=runs_by_outcome(self, 3600),
            failures=failures[:RECENT_FAILURES], draining=self.draining,
        )

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        """``/readyz``: 200 while the config is loaded and the store writable (also when a
        newer config was rejected: the last good one is serving); 503 while stopping."""
        store_ok = store_writable(self.conn)
        doc: dict[str, Any] = {
            "status": "ready", "revision": self.revision, "store": "ok" if store_ok else "error",
            "config": "ok" if self.last_reload.ok else "rejected",
        }
        if not self.last_reload.ok:
            doc["rejected"] = self.last_reload.to_json()
        if self.draining or not store_ok:
            doc["status"] = "draining" if self.draining else "unavailable"
            return 503, doc
        return 200, doc

    def metrics_text(self) -> str:
        """The daemon's own Prometheus series, appended to the admin app's /metrics."""
        lines = [
            "# HELP hookd_config_reloads_total Config loads by outcome (rejected = invalid, "
            "last good config kept).",
            "# TYPE hookd_config_reloads_total counter",
            *(f'hookd_config_reloads_total{{outcome="{k}"}} {v}' for k, v in self.reloads.items()),
            "# HELP hookd_config_rejected 1 when the newest config on disk was rejected.",
            "# TYPE hookd_config_rejected gauge",
            f"hookd_config_rejected {0 if self.last_reload.ok else 1}",
            "# HELP hookd_config_last_reload_timestamp_seconds When the config was last loaded.",
            "# TYPE hookd_config_last_reload_timestamp_seconds gauge",
            f"hookd_config_last_reload_timestamp_seconds {self.last_reload.at:.3f}",
            "# HELP hookd_config_info The running config revision.",
            "# TYPE hookd_config_info gauge",
            f'hookd_config_info{{revision="{self.revision}"}} 1',
            "# HELP hookd_daemon_reconciles_total Reconcile passes run by the daemon.",
            "# TYPE hookd_daemon_reconciles_total counter",
            *(f'hookd_daemon_reconciles_total{{result="{k}"}} {v}'
              for k, v in self.reconciles.items()),
            "# HELP hookd_draining 1 while shutting down.",
            "# TYPE hookd_draining gauge",
            f"hookd_draining {int(self.draining)}",
        ]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- seams
# What the daemon needs from the other parts, each in one place. They degrade to
# "not available" (logged once at debug) so the daemon runs with whatever is built.


def make_app_state(daemon: Daemon) -> Any:
    """seam (server): the shared state the public and admin apps read."""
    try:
        from hookd.server import AppState
    except ImportError:
        return None
    return AppState(config=daemon.config, conn=daemon.conn, server_secret=daemon.server_secret)


def swap_config(app_state: Any, config: Config) -> None:
    """seam (server): one attribute assignment, so a request sees the old or the new
    config, never a mix; runs already started keep the config object they hold."""
    if app_state is not None:
        app_state.config = config


async def close_app_state(app_state: Any) -> None:
    """seam (server): flush the inbox writer, if the state has one."""
    close = getattr(app_state, "aclose", None)
    if close is not None:
        await close()


def make_public_app(app_state: Any) -> Any:
    """seam (server): the callback app; 404 for everything until the server part lands."""
    try:
        from hookd.server import create_app
    except ImportError:
        from starlette.applications import Starlette

        return Starlette()
    return create_app(app_state)


def make_admin_app(app_state: Any) -> Any | None:
    """seam (admin): healthz/metrics and the runs API."""
    try:
        from hookd.admin import create_admin_app
    except ImportError:
        return None
    return create_admin_app(app_state)


async def start_worker(daemon: Daemon) -> Any:
    """seam (pipeline): start taking deliveries from the store."""
    try:
        from hookd.worker import Worker
    except ImportError:
        return None
    worker = Worker(daemon.app_state)
    await worker.start()
    return worker


async def stop_worker(worker: Any) -> None:
    """seam (pipeline): stop taking work, let running steps finish (cancelled after
    ``shutdown_timeout`` by the caller)."""
    if worker is not None:
        await worker.stop()


async def reconcile_once(daemon: Daemon, config: Config) -> Any:
    """seam (reconciler): one plan + apply against upstream; returns a report summary."""
    try:
        reconcile = importlib.import_module("hookd.reconcile")
    except ImportError:
        log.debug("reconciler not available; skipping reconcile")
        return NOT_AVAILABLE
    from hookd.store.subscriptions import SubscriptionStore

    assert daemon.conn is not None
    report = await reconcile.reconcile_once(config, SubscriptionStore(daemon.conn),
                                            daemon.server_secret)
    return report_summary(report)


def report_summary(report: Any) -> dict[str, Any]:
    """A reconcile report as log fields: counts by action and result, and the failures."""
    counts: dict[str, int] = {}
    failures: list[str] = []
    for o in getattr(report, "outcomes", []):
        key = f"{o.action}:{o.result}"
        counts[key] = counts.get(key, 0) + 1
        if o.result in ("failed", "unmanageable", "blocked") or o.action == "blocked":
            failures.append(f"{o.flow}: {o.action} {o.result}: {o.detail}")
    summary: dict[str, Any] = {"outcomes": counts}
    if failures:
        summary["failures"] = failures[:RECENT_FAILURES]
    warnings = list(getattr(getattr(report, "plan", None), "warnings", []) or [])
    if warnings:
        summary["warnings"] = warnings
    return summary


def requeue_running(conn: sqlite3.Connection) -> int:
    """seam (store): deliveries left running by a crash go back to the queue."""
    from hookd.store import deliveries

    store_class = getattr(deliveries, "DeliveryStore", None)
    if store_class is None:
        return 0
    return int(store_class(conn).requeue_running() or 0)


def subscription_rows(daemon: Daemon) -> list[Any]:
    """seam (store): every subscription row hookd holds."""
    from hookd.store import subscriptions

    store_class = getattr(subscriptions, "SubscriptionStore", None)
    if store_class is None or daemon.conn is None:
        return []
    try:
        return list(store_class(daemon.conn).all())
    except Exception:
        log.debug("cannot read subscriptions", exc_info=True)
        return []


def subscription_counts(daemon: Daemon) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in subscription_rows(daemon):
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts


def inbox_depth(daemon: Daemon) -> int | None:
    from hookd.store import deliveries

    store_class = getattr(deliveries, "DeliveryStore", None)
    if store_class is None or daemon.conn is None:
        return None
    try:
        return int(store_class(daemon.conn).depth())
    except Exception:
        return None


def runs_by_outcome(daemon: Daemon, seconds: float) -> dict[str, int] | None:
    """seam (pipeline): runs finished in the last `seconds`, by outcome."""
    from hookd.store import runs

    store_class = getattr(runs, "RunStore", None)
    if store_class is None or not hasattr(store_class, "counts_since") or daemon.conn is None:
        return None
    try:
        return dict(store_class(daemon.conn).counts_since(time.time() - seconds))
    except Exception:
        return None


def recent_failed_runs(daemon: Daemon) -> list[status.Failure]:
    """seam (pipeline): the newest failed runs."""
    from hookd.store import runs

    store_class = getattr(runs, "RunStore", None)
    if store_class is None or not hasattr(store_class, "recent_failures") or daemon.conn is None:
        return []
    try:
        return [status.Failure("run", r.flow, r.id, r.error or "failed", r.finished_at)
                for r in store_class(daemon.conn).recent_failures(RECENT_FAILURES)]
    except Exception:
        return []


def prune_history(daemon: Daemon) -> dict[str, int]:
    """seam (store): delete deliveries and runs older than ``retention.max_age``."""
    from hookd.store import deliveries, runs

    before = time.time() - daemon.config.settings.retention.max_age
    pruned: dict[str, int] = {}
    conn = daemon.conn
    if conn is None:
        return pruned
    for name, module, class_name in (("runs", runs, "RunStore"),
                                     ("deliveries", deliveries, "DeliveryStore")):
        store_class = getattr(module, class_name, None)
        if store_class is not None and hasattr(store_class, "prune"):
            pruned[name] = int(store_class(conn).prune(before) or 0)
    return pruned


def store_writable(conn: sqlite3.Connection | None) -> bool:
    if conn is None:
        return False
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except Exception:
        return False
    return True


# --------------------------------------------------------------------------- entry point


def main(directory: Path, *, state_dir: Path | None = None) -> int:
    """`hookd run`: refuse an invalid config (the `hookd check` report, exit 1), else serve."""
    directory = Path(directory)
    if not directory.is_dir():
        print(f"hookd run: {directory}: not a directory", file=sys.stderr)
        return EXIT_IO
    # Hashed before loading, so an edit made while loading is caught up after start.
    loaded = revision.content_hash(directory, [directory / "state", *([state_dir] if state_dir else [])])
    config, diagnostics, rev = load(directory, state_dir)
    if config is None:
        for line in format_report(diagnostics, directory):
            print(line, file=sys.stderr)
        print("hookd run: the config is invalid; not starting", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    logs.configure(config.settings.log_format, config.settings.log_level)
    # `kill -USR1` dumps every thread's stack to stderr: the tool for "hookd hangs".
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    for d in diagnostics:
        log.warning("config warning: %s", d.format(relative_to=directory))
    daemon = Daemon(directory, config, rev, state_dir=state_dir, loaded_hash=loaded)
    return asyncio.run(daemon.run())
