"""The long-running service: one process, one event loop, every part wired together.

`hookd run` loads and validates the config, opens the store, starts the public
(callback) and admin listeners as two uvicorn servers on one loop, starts the pipeline
worker, tells systemd it is ready, reconciles once and then lives on events:

- config changes (watchfiles) and ``SIGHUP`` → load → validate → swap → reconcile. A
  config that does not validate is rejected as a whole: the last good one keeps running,
  nothing is deleted, the errors are logged, shown on ``/readyz`` and ``/api/status`` and
  counted in ``hookd_config_reloads_total{outcome="rejected"}``;
- the scheduler (apscheduler 3) → periodic reconcile with jitter, retry of failed
  subscriptions with backoff, run-history pruning; no job overlaps itself;
- ``SIGTERM``/``SIGINT`` → ``STOPPING=1``, the public listener answers 503 while the
  worker finishes in-flight steps (up to ``shutdown_timeout``), the inbox and the store
  are flushed, exit 0. Upstream hooks are left in place: a restart must not churn upstream.

hookd owns the signals, not uvicorn: a uvicorn server exits on SIGINT by itself, which
would skip the drain. Requests see the config through `hookd.ingest.app.AppState`, whose
``config`` is swapped as one attribute; runs already started keep the config they began
with (the worker reads it once per run).
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
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hookd import __version__
from hookd.daemon import reload, revision, sdnotify, status
from hookd.diagnostics import Diagnostic, has_errors
from hookd.telemetry import logs

if TYPE_CHECKING:
    import sqlite3

    import uvicorn

    from hookd.admin.auth import AdminAuth
    from hookd.config.model import Config, Listener
    from hookd.daemon.protocol import Guard
    from hookd.ingest.app import AppState

log = logging.getLogger("hookd.daemon.lifecycle")

EXIT_OK, EXIT_INVALID_CONFIG, EXIT_IO = 0, 1, 2
RECENT_FAILURES = 10
# A failed subscription is retried after RETRY_BASE * 2**n seconds (n = failed passes in
# a row), at most RETRY_MAX, ±20 %; the periodic reconcile repairs everything else.
RETRY_BASE, RETRY_MAX = 30.0, 1800.0
PRUNE_EVERY = 3600.0  # seconds between run-history prunes (first one after a minute)


# --------------------------------------------------------------------------- loading


def load(
    directory: Path, state_dir: Path | None = None, *, public: Listener | None = None,
    admin: Listener | None = None,
) -> tuple[Config | None, list[Diagnostic], str]:
    """Load and validate: the config (None when invalid), all diagnostics, the revision.

    `state_dir`, `public` and `admin` are `hookd run`'s overrides of hookd.yaml.
    """
    from hookd.config.loader import load_config

    config, diagnostics = load_config(directory)
    if has_errors(diagnostics):
        config = None
    if config is not None:
        settings = config.settings
        if state_dir is not None:
            settings = dataclasses.replace(settings, state_dir=Path(state_dir).absolute())
        if public is not None:
            settings = dataclasses.replace(settings, public=public)
        if admin is not None:
            settings = dataclasses.replace(settings, admin=admin)
        config = dataclasses.replace(config, settings=settings)
    exclude = [Path(directory) / "state", *([state_dir] if state_dir else [])]
    if config is not None:
        exclude.append(config.settings.state_dir)
    rev = revision.config_revision(Path(directory), exclude)
    if config is not None:
        config = dataclasses.replace(config, revision=rev)
    return config, diagnostics, rev


def format_report(diagnostics: list[Diagnostic], directory: Path) -> list[str]:
    """The lines `hookd check` prints: every problem (the loader sorts them), then a count."""
    base = Path(directory).absolute()
    lines = [d.format(relative_to=base) for d in diagnostics]
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    summary = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    lines.append(f"{directory}: {'ok' if not errors else 'failed'} ({summary})")
    return lines


def register_secrets(config: Config) -> None:
    """Mask every secret the config references in all log lines (see `hookd.telemetry.logs`)."""
    from hookd.config import secrets
    from hookd.config.model import SecretRef

    values: list[Any] = [p for c in config.connections.values() for p in c.parameters.values()]
    values += [f.verify_secret for f in config.flows.values() if f.verify_secret is not None]
    for value in values:
        if isinstance(value, SecretRef):
            with contextlib.suppress(Exception):  # unresolvable: reported by the loader
                logs.register_secret(secrets.resolve_value(value, base_dir=config.directory))


# --------------------------------------------------------------------------- listeners


def quiet_server(config: uvicorn.Config) -> uvicorn.Server:
    """A uvicorn server that leaves the signals to hookd."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    return Server(config)


async def serve(server: uvicorn.Server, sockets: list[socket.socket] | None) -> None:
    """Run one listener; uvicorn's ``sys.exit(3)`` when it cannot bind ends only this task
    (the daemon then stops with exit code 2), not the whole event loop."""
    with contextlib.suppress(SystemExit):
        await server.serve(sockets=sockets)


def inherited_socket(env: dict[str, str]) -> socket.socket | None:
    """The public listener passed by systemd socket activation (fd 3), if any."""
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    return socket.socket(fileno=3) if count >= 1 else None


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """One `hookd run`: the running config and everything built from it."""

    def __init__(
        self,
        directory: Path,
        config: Config,
        revision_: str,
        *,
        state_dir: Path | None = None,
        public: Listener | None = None,
        admin: Listener | None = None,
        env: dict[str, str] | None = None,
        loaded_hash: str = "",
        warned: Sequence[str] = (),
    ) -> None:
        self.directory = Path(directory).absolute()
        self.config = config
        self.revision = revision_
        self.state_dir_override = state_dir
        self.listener_overrides = (public, admin)
        self.env = dict(os.environ) if env is None else env
        self.notifier = sdnotify.Notifier(self.env)
        self.started_at = time.time()
        self.reloader = reload.Reloader(
            self.directory, self._load, self, exclude=self._exclude,
            initial=status.ReloadOutcome(self.started_at, "start", True, revision_),
            loaded_hash=loaded_hash or revision.content_hash(self.directory, self._exclude()),
            warned=warned,
        )
        self.conn: sqlite3.Connection | None = None
        self.state: AppState | None = None
        self.worker: Any = None  # hookd.runs.worker.Worker or hookd.runs.worker_process.ProcessWorker
        self.server_secret = b""
        self.draining = False
        self._next_retry: dict[str, float] = {}  # failed subscription id → when to retry
        self._failed_passes: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._reconcile_lock = asyncio.Lock()
        self._reconcile_again = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._auth: tuple[Any, AdminAuth] | None = None  # (settings, auth) of admin_auth()
        self._bound: dict[str, int] = {}  # listener → the port it got (for port 0)

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.stop, "SIGINT")
        loop.add_signal_handler(
            signal.SIGHUP, lambda: self._spawn(self.reload("sighup"), "reload"))

        settings = self.config.settings
        try:
            self._open_store()
        except Exception as exc:
            log.error("cannot open the state store",
                      extra={"state_dir": str(settings.state_dir), "error": str(exc)})
            return EXIT_IO
        register_secrets(self.config)
        self.state = self._app_state()
        try:
            self.state.inbox.start()  # fails here, loudly, on a bad state directory
        except Exception as exc:
            log.error("cannot open the inbox", extra={"error": str(exc)})
            await self._close()
            return EXIT_IO
        try:
            self.admin_auth()  # the token exists (or is readable) before anyone can ask
        except Exception as exc:
            log.error("cannot read or create the admin token", extra={"error": str(exc)})
            await self._close()
            return EXIT_IO
        public, admin = self._apps(self.state)
        guards = self._guards()
        servers = [
            self._server(public, settings.public.host, settings.public.port, guards[0]),
            self._server(admin, settings.admin.host, settings.admin.port, guards[1]),
        ]
        inherited = inherited_socket(self.env)
        serving = [
            asyncio.create_task(serve(servers[0], [inherited] if inherited else None)),
            asyncio.create_task(serve(servers[1], None)),
        ]
        if not await self._started(servers, serving):
            log.error("a listener failed to start (address in use or not allowed?)", extra={
                "public": f"{settings.public.host}:{settings.public.port}",
                "admin": f"{settings.admin.host}:{settings.admin.port}"})
            await self._stop_servers(servers, serving)
            await self._close()
            return EXIT_IO
        await self._learn_ports(servers)
        settings = self.config.settings

        summary = self.summary()
        self.notifier.ready(summary)
        log.info("hookd is ready", extra={
            "version": __version__, "revision": self.revision, "flows": len(self.config.flows),
            "public": "systemd socket" if inherited else
                      f"{settings.public.host}:{settings.public.port}",
            "admin": f"{settings.admin.host}:{settings.admin.port}", "summary": summary,
        })

        # After READY=1: nothing below is needed to accept deliveries, which are durable
        # in the inbox before the worker runs them. Heavy modules are imported on a
        # thread so the listeners keep answering meanwhile.
        self._spawn(sdnotify.watchdog_loop(self.notifier), "watchdog")
        self.worker = await self._make_worker()  # sets state.worker: commits poke it
        await self.worker.start()
        self._spawn(self.reloader.watch(self._reconcile_soon), "watch")
        await asyncio.to_thread(importlib.import_module, "hookd.reconcile.reconciler")
        if settings.reconcile.on_start:
            self._spawn(self.reconcile("start"), "reconcile")
        scheduler = await self._start_scheduler()

        await self._stop.wait()
        return await self._shutdown(servers, serving, scheduler)

    def stop(self, reason: str = "") -> None:
        """Begin a graceful shutdown (idempotent)."""
        if not self._stop.is_set():
            log.info("stopping", extra={"signal": reason})
            self._stop.set()

    async def _shutdown(
        self, servers: list[uvicorn.Server], serving: list[asyncio.Task[Any]], scheduler: Any
    ) -> int:
        self.notifier.stopping()
        self.draining = True
        assert self.state is not None
        self.state.draining = True  # the public listener answers 503 from now on
        if scheduler is not None:
            with contextlib.suppress(Exception):
                scheduler.shutdown(wait=False)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.worker is not None:
            # Running steps finish (up to shutdown_timeout); the rest stays queued.
            try:
                await self.worker.stop(self.config.settings.shutdown_timeout)
            except Exception:
                log.exception("error while stopping the worker")
        await self._stop_servers(servers, serving)
        await self._close()
        log.info("stopped", extra={"uptime": round(time.time() - self.started_at, 3)})
        return EXIT_OK

    async def _stop_servers(
        self, servers: list[uvicorn.Server], serving: list[asyncio.Task[Any]]
    ) -> None:
        for server in servers:
            server.should_exit = True
        _, pending = await asyncio.wait(serving, timeout=5)
        if pending:  # connections that will not close: stop waiting for them
            for server in servers:
                server.force_exit = True
            await asyncio.wait(pending, timeout=2)

    def _guards(self) -> list[Guard]:
        """The public and admin listeners' bounds (`hookd.daemon.protocol`), on /metrics."""
        from hookd.daemon import protocol

        limits = self.config.settings.limits
        open_files = protocol.open_file_limit()
        policies = protocol.policies(limits, open_files)
        guards = [protocol.Guard(name, policies[name]) for name in ("public", "admin")]
        if policies["public"].max_connections < limits.max_connections:
            log.warning("the open-file limit lowers the public listener's connection cap",
                        extra={"open_files": open_files,
                               "max_connections": policies["public"].max_connections,
                               "hint": "raise LimitNOFILE= (systemd) or ulimit -n"})
        assert self.state is not None
        self.state.metrics.add(protocol.GuardMetrics(guards))
        return guards

    def _server(self, app: Any, host: str, port: int, guard: Guard) -> uvicorn.Server:
        """The one place a listener's uvicorn config is made (`hookd.daemon.protocol`)."""
        import uvicorn

        from hookd.daemon import protocol

        limits = self.config.settings.limits
        config = uvicorn.Config(
            app, host=host, port=port,
            log_config=None,  # hookd's handler formats and redacts everything
            access_log=False,  # callback paths carry tokens; hookd logs deliveries itself
            lifespan="off", server_header=False,
            timeout_graceful_shutdown=max(1, int(self.config.settings.shutdown_timeout)),
            # httptools with hookd's header cap, header/body timeouts and connection cap
            # (h11, and so h11_max_incomplete_event_size, is never used).
            http=protocol.protocol_class(guard),
            timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]  # a float works
            # A backstop only: uvicorn answers 503 when its count of connections or of
            # requests in flight reaches this. The guard keeps connections at the cap, but
            # those it closes leave uvicorn's count a moment later (during a burst of
            # accepts), so the backstop sits well above the cap.
            limit_concurrency=2 * guard.policy.max_connections,
            backlog=min(2048, guard.policy.max_connections),
        )
        return quiet_server(config)

    async def _started(
        self, servers: list[uvicorn.Server], serving: list[asyncio.Task[Any]]
    ) -> bool:
        while not all(s.started for s in servers):
            if any(t.done() for t in serving):
                return False  # uvicorn exits its task when it cannot bind
            await asyncio.sleep(0.005)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ parts

    async def _make_worker(self) -> Any:
        """The pipeline worker: in a child process of its own (`hookd.runs.worker_process`,
        ``worker.mode: process``, the default), which gives the pipelines a CPU core apart
        from the callback listener at the cost of a second interpreter, or in this process
        (``inline``). ``HOOKD_WORKER`` overrides hookd.yaml. The mode is read at start."""
        assert self.state is not None
        mode = self.env.get("HOOKD_WORKER") or self.config.settings.worker_mode
        if mode == "process":
            module = await asyncio.to_thread(importlib.import_module, "hookd.runs.worker_process")
            settings = self.config.settings
            return module.ProcessWorker(self.state, log_format=settings.log_format,
                                        log_level=settings.log_level)
        module = await asyncio.to_thread(importlib.import_module, "hookd.runs.worker")
        return module.Worker(self.state)

    def _open_store(self) -> None:
        from hookd.store.sqlite import db
        from hookd.subscriptions import tokens

        state_dir = self.config.settings.state_dir
        self.conn = db.open_db(state_dir, check_same_thread=False)
        self.server_secret = tokens.load_or_create_server_secret(state_dir)

    def _app_state(self) -> AppState:
        from hookd.ingest.app import AppState
        from hookd.telemetry import metrics

        state = AppState(self.config, self.conn, self.server_secret)
        for source in self._metrics(metrics):
            state.metrics.add(source)
        return state

    def _apps(self, state: AppState) -> tuple[Any, Any]:
        """The public app, and the admin app with ``/api/status`` and the runs API."""
        from hookd.admin import api
        from hookd.admin.app import create_admin_app
        from hookd.ingest.app import create_app

        routes = [*status.routes(self.status_facts), *api.routes(state)]
        return create_app(state), create_admin_app(state, routes, auth=self.admin_auth)

    def admin_auth(self) -> AdminAuth:
        """The admin listener's `AdminAuth` for the running config (`hookd.admin.auth`):
        made again when a reload brings new settings; a token that cannot be resolved
        then keeps the last one (and says so)."""
        from hookd.admin import auth
        from hookd.config import secrets

        settings = self.config.settings
        if self._auth is not None and self._auth[0] is settings:
            return self._auth[1]
        try:
            token = auth.server_token(settings, lambda ref: secrets.resolve_value(
                ref, base_dir=self.config.directory))
        except Exception as exc:
            if self._auth is None:
                raise
            log.error("cannot read the admin token; keeping the last one",
                      extra={"error": str(exc)})
            token = self._auth[1].token
        logs.register_secret(token)
        current = auth.AdminAuth.for_settings(settings, token)
        self._auth = (settings, current)
        return current

    def _metrics(self, metrics: Any) -> list[Any]:
        """The daemon's series, rendered with the others on ``/metrics``."""
        reloader = self.reloader
        return [
            metrics.Family("hookd_config_reloads_total",
                           "Config loads by outcome: applied (the start counts), or rejected "
                           "(invalid; the last good config keeps running).",
                           "counter", "outcome", lambda: reloader.counts),
            metrics.Gauge("hookd_config_rejected",
                          "1 while the newest config on disk is rejected, else 0.",
                          lambda: 0 if reloader.last.ok else 1),
            metrics.Gauge("hookd_config_last_reload_timestamp_seconds",
                          "When the config was last loaded (applied or rejected).",
                          lambda: reloader.last.at),
            metrics.Gauge("hookd_draining", "1 while shutting down.", lambda: int(self.draining)),
            # The running revision as Prometheus "info" metrics do it (a label on a
            # constant), for dashboards that mark config changes.
            metrics.Family("hookd_config_info", "The running config revision (label), always 1.",
                           "gauge", "revision", lambda: {self.revision: 1}),
        ]

    async def _close(self) -> None:
        if self.state is not None:
            with contextlib.suppress(Exception):
                await self.state.aclose()  # commits what the inbox holds
        if self.conn is not None:
            with contextlib.suppress(Exception):
                # Fold the WAL into the main file: a clean stop leaves one self-contained file.
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.close()
            self.conn = None

    # ------------------------------------------------------------------ reload

    def _exclude(self) -> list[Path]:
        """Directories inside the config directory that are not config (the state)."""
        exclude = [self.config.settings.state_dir, self.directory / "state"]
        if self.state_dir_override is not None:
            exclude.append(self.state_dir_override)
        return exclude

    def _load(self) -> tuple[Config | None, list[Diagnostic], str]:
        public, admin = self.listener_overrides
        config, diagnostics, rev = load(self.directory, self.state_dir_override,
                                        public=public, admin=admin)
        return (self._with_bound_ports(config) if config is not None else None), diagnostics, rev

    async def _learn_ports(self, servers: list[uvicorn.Server]) -> None:
        """Put the ports the listeners got into the running config where it says 0 (any
        free port): steps must never reach hookd's own listeners (`hookd.runs.egress`),
        and that check reads the ports from the config."""
        for name, server in zip(("public", "admin"), servers, strict=True):
            for listening in server.servers:
                for sock in listening.sockets:
                    self._bound.setdefault(name, int(sock.getsockname()[1]))
        config = self._with_bound_ports(self.config)
        if config is not self.config:
            self.config = config
            if self.state is not None:
                await asyncio.to_thread(setattr, self.state, "config", config)

    def _with_bound_ports(self, config: Config) -> Config:
        settings, changed = config.settings, {}
        for name, port in self._bound.items():
            listener = getattr(settings, name)
            if listener.port == 0:
                changed[name] = dataclasses.replace(listener, port=port)
        if not changed:
            return config
        return dataclasses.replace(config, settings=dataclasses.replace(settings, **changed))

    async def reload(self, trigger: str) -> bool | None:
        """Reload now (SIGHUP); reconcile when a new config was applied."""
        applied = await self.reloader.reload(trigger)
        if applied:
            self._reconcile_soon()
        return applied

    def _reconcile_soon(self) -> None:
        self._spawn(self.reconcile("reload"), "reconcile")

    async def apply_config(self, config: Config, revision_: str, trigger: str) -> None:
        """`reload.Target`: swap in a new, valid config."""
        old = self.config.settings
        for key in ("public", "admin", "state_dir", "store", "workers"):
            if getattr(old, key) != getattr(config.settings, key):
                log.warning("setting changed; it takes effect after a restart",
                            extra={"setting": key})
        register_secrets(config)
        if self.state is not None:
            # Assigning builds the new route table (it compiles each flow's payload schema)
            # and then swaps one attribute: requests see the old or the new config, never
            # a mix. Built on a thread, so the listeners keep answering meanwhile.
            await asyncio.to_thread(setattr, self.state, "config", config)
            self.state.rejected_config = None
        self.config = config
        self.revision = revision_
        if self.worker is not None:
            # A child worker would see the new config only at its next periodic check;
            # push it now so that deliveries accepted from here on run on it.
            self.worker.poke()

    def config_rejected(self, outcome: status.ReloadOutcome) -> None:
        """`reload.Target`: keep the running config; show the rejection on /readyz."""
        if self.state is not None:
            errors = outcome.errors
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            self.state.rejected_config = (
                f"revision {outcome.revision}: {errors[0] if errors else '?'}{more}")

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, reason: str) -> None:
        """One pass at a time; a request during a pass runs one more pass after it."""
        if self._reconcile_lock.locked():
            self._reconcile_again = True
            return
        async with self._reconcile_lock:
            while True:
                self._reconcile_again = False
                await self._reconcile_pass(reason)
                if not self._reconcile_again:
                    break
                reason = "coalesced"

    async def _reconcile_pass(self, reason: str) -> None:
        from hookd.reconcile import reconciler as reconcile
        from hookd.store.sqlite.subscriptions import SubscriptionStore

        assert self.conn is not None and self.state is not None
        config = self.config  # the pass works on one config from start to end
        try:
            report = await reconcile.reconcile_once(
                config, SubscriptionStore(self.conn), self.server_secret)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("reconcile failed", extra={"reason": reason, "error": str(exc)},
                      exc_info=log.isEnabledFor(logging.DEBUG))
            self.state.metrics.reconcile_results.inc("pass", "error")
            changed = True  # it may have got part of the way
        else:
            changed = any(o.action != "keep" or o.result != "ok" for o in report.outcomes)
            counts: dict[str, int] = {}
            for o in report.outcomes:
                counts[f"{o.action}:{o.result}"] = counts.get(f"{o.action}:{o.result}", 0) + 1
                self.state.metrics.reconcile_results.inc(str(o.action), str(o.result))
            log.info("reconciled", extra={
                "reason": reason, "revision": self.revision, "ok": report.ok,
                "seconds": round(report.duration, 3), "outcomes": counts,
                **({"warnings": list(report.plan.warnings)} if report.plan.warnings else {}),
            })
        if changed:
            # Route callbacks of subscriptions created or removed. Rebuilding the routes
            # costs time per flow, so a pass that kept everything as it was skips it.
            await asyncio.to_thread(self.state.refresh)
        self._schedule_retries()
        self.notifier.status(self.summary())

    def _schedule_retries(self) -> None:
        from hookd.subscriptions import tokens

        rows = self._subscriptions()
        for row in rows:
            # Signing secrets and callback tokens end up in URLs and errors: mask them.
            logs.register_secret(row.secret)
            logs.register_secret(tokens.callback_token(self.server_secret, row.id))
        failing = [r.id for r in rows
                   if status.shown_state(r.status, r.last_error) in status.FAILING_STATES]
        self._next_retry, self._failed_passes = retry_schedule(
            failing, self._failed_passes, time.time(), lambda: random.uniform(0.8, 1.2))

    async def retry_failed(self) -> None:
        """Scheduled: reconcile when a failed subscription's backoff has elapsed."""
        now = time.time()
        if any(at <= now for at in self._next_retry.values()):
            await self.reconcile("retry")

    async def prune(self) -> None:
        """Scheduled: drop finished runs and deliveries beyond ``retention``."""
        try:
            pruned = await asyncio.to_thread(self._prune)
        except Exception as exc:
            log.error("pruning run history failed", extra={"error": str(exc)})
            return
        if any(pruned.values()):
            log.info("pruned history", extra=pruned)

    def _prune(self) -> dict[str, int]:
        from hookd.store.sqlite import db
        from hookd.store.sqlite.deliveries import DeliveryStore
        from hookd.store.sqlite.runs import RunStore

        retention = self.config.settings.retention
        # Its own connection: this runs on a thread, and a long delete must not hold the
        # event loop's connection.
        conn = db.connect(self.config.settings.state_dir / db.DB_NAME)
        try:
            runs = RunStore(conn).prune(max_age=retention.max_age, max_runs=retention.max_runs)
            deliveries = DeliveryStore(conn).prune(time.time() - retention.max_age)
        finally:
            conn.close()
        return {"runs": runs, "deliveries": deliveries}

    async def _start_scheduler(self) -> Any:
        # Imported on a thread: apscheduler takes ~0.1 s to import, and the listeners are
        # already answering on this loop.
        module = await asyncio.to_thread(importlib.import_module, "apscheduler.schedulers.asyncio")
        policy = self.config.settings.reconcile
        scheduler = module.AsyncIOScheduler(job_defaults={
            "max_instances": 1, "coalesce": True, "misfire_grace_time": None})
        scheduler.add_job(self.reconcile, "interval", args=["scheduled"], id="reconcile",
                          seconds=policy.interval, jitter=policy.interval * policy.jitter)
        scheduler.add_job(self.retry_failed, "interval", id="retry", seconds=15, jitter=5)
        first_prune = time.time() + 60
        scheduler.add_job(self.prune, "interval", id="prune", seconds=PRUNE_EVERY,
                          jitter=PRUNE_EVERY / 10,
                          next_run_time=datetime.fromtimestamp(first_prune, UTC))
        scheduler.start()
        return scheduler

    # ------------------------------------------------------------------ status

    def _subscriptions(self) -> list[Any]:
        from hookd.store.sqlite.subscriptions import SubscriptionStore

        if self.conn is None:
            return []
        return SubscriptionStore(self.conn).all()

    def summary(self) -> str:
        counts = status.state_counts((r.status, r.last_error) for r in self._subscriptions())
        line = status.summary_line(sum(f.enabled for f in self.config.flows.values()), counts)
        if not self.reloader.last.ok:
            line += f"; config {self.reloader.last.revision} rejected"
        return line

    def status_facts(self) -> status.StatusFacts:
        from hookd.store.sqlite.deliveries import DeliveryStore
        from hookd.store.sqlite.runs import RunStore

        assert self.conn is not None
        rows = self._subscriptions()
        counts = status.state_counts((r.status, r.last_error) for r in rows)
        failures = [
            status.Failure("subscription", r.flow, r.id, r.last_error or r.status, r.updated_at)
            for r in rows if status.shown_state(r.status, r.last_error) in status.FAILING_STATES
        ]
        failures += [
            status.Failure("run", r.flow, r.id, r.error or "failed", r.finished_at)
            for r in RunStore(self.conn).list(status="failed", limit=RECENT_FAILURES)
        ]
        failures.sort(key=lambda f: f.at or 0, reverse=True)
        # Errors quote upstream answers and URLs: mask secrets as the logs do.
        failures = [dataclasses.replace(f, error=logs.REDACTOR.redact(f.error)) for f in failures]
        return status.StatusFacts(
            version=__version__, started_at=self.started_at, now=time.time(),
            revision=self.revision, flows=sum(f.enabled for f in self.config.flows.values()),
            last_reload=self.reloader.last, subscriptions=counts,
            inbox_depth=DeliveryStore(self.conn).depth(),
            runs_last_hour=runs_since(self.conn, time.time() - 3600),
            failures=failures[:RECENT_FAILURES], draining=self.draining,
            connections=self._unready_connections(),
        )

    def _unready_connections(self) -> dict[str, tuple[str, str]]:
        """``oauth:`` connections in use that cannot authenticate (read from the token
        files: a few small reads, on the admin listener's request)."""
        from hookd.oauth.readiness import unready, used_connections
        from hookd.store.tokens import FileTokenStore

        store = FileTokenStore(self.config.settings.state_dir)
        try:
            found = unready(self.config, store.get, time.time(), used_connections(self.config))
        except OSError as exc:
            return {"?": (str(exc), "check the state directory")}
        return {u.connection.name: (u.problem, u.hint) for u in found}


def retry_schedule(
    failing: list[str], passes: dict[str, int], now: float, jitter: Callable[[], float]
) -> tuple[dict[str, float], dict[str, int]]:
    """When to retry each failing subscription, after the pass that found it failing.

    `passes` counts the passes in a row each one has failed; the delay doubles with each
    (RETRY_BASE, at most RETRY_MAX) times `jitter()`. Subscriptions that recovered or are
    gone drop out.

    >>> retry_schedule(["a", "b"], {"b": 3, "gone": 1}, 100.0, lambda: 1.0)
    ({'a': 130.0, 'b': 340.0}, {'a': 1, 'b': 4})
    >>> retry_schedule(["a"], {"a": 20}, 0.0, lambda: 1.0)[0]
    {'a': 1800.0}
    """
    next_at: dict[str, float] = {}
    counts: dict[str, int] = {}
    for sub_id in failing:
        n = passes.get(sub_id, 0)
        counts[sub_id] = n + 1
        next_at[sub_id] = now + min(RETRY_MAX, RETRY_BASE * 2**n) * jitter()
    return next_at, counts


def runs_since(conn: sqlite3.Connection, since: float) -> dict[str, int]:
    """Runs created since `since`, by status (uses the runs table's created_at index)."""
    rows = conn.execute(
        "SELECT status, count(*) FROM runs WHERE created_at >= ? GROUP BY status", (since,))
    return {str(s): int(n) for s, n in rows}


# --------------------------------------------------------------------------- entry point


def main(directory: Path, *, state_dir: Path | None = None, public: Listener | None = None,
         admin: Listener | None = None) -> int:
    """`hookd run`: refuse an invalid config (the `hookd check` report, exit 1), else serve."""
    directory = Path(directory)
    if not directory.is_dir():
        print(f"hookd run: {directory}: not a directory", file=sys.stderr)
        return EXIT_IO
    # Hashed before loading, so an edit made while loading is caught up after start.
    loaded = revision.content_hash(directory, [directory / "state",
                                               *([state_dir] if state_dir else [])])
    config, diagnostics, rev = load(directory, state_dir, public=public, admin=admin)
    if config is None:
        for line in format_report(diagnostics, directory):
            print(line, file=sys.stderr)
        print("hookd run: the config is invalid; not starting", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    logs.configure(config.settings.log_format, config.settings.log_level)
    # `kill -USR1` dumps every thread's stack to stderr: the tool for "hookd hangs".
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    warned = sorted({d.format(relative_to=directory.absolute()) for d in diagnostics})
    for line in warned:
        log.warning("config warning: %s", line)
    if admin is not None:  # --admin: hookd check saw only hookd.yaml's address
        from hookd.config.check import admin_exposure

        exposed = admin_exposure(config.settings)
        if exposed is not None:
            log.warning(exposed, extra={"hint": "bind it to 127.0.0.1 (docs/daemon.md, "
                                                "\"Admin authentication\")"})

    async def serve() -> int:
        return await Daemon(directory, config, rev, state_dir=state_dir, public=public,
                            admin=admin, loaded_hash=loaded, warned=warned).run()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(serve())


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (a dependency on Linux): the callback listener answers
    2-3x more requests per second on it. uvicorn would pick it by itself, but only for a
    loop it creates; hookd creates the loop so that both listeners share it."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
