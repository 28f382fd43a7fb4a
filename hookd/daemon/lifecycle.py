"""The long-running service: one process, one event loop, every part wired together.

`hookd run` loads and validates the config, opens the store, starts the public
(callback) and admin listeners as two uvicorn servers on one loop, starts the pipeline
worker, tells systemd it is ready, reconciles once and then lives on events:

- config changes (watchfiles) and ``SIGHUP`` → load → validate → swap → reconcile. A
  config that does not validate is rejected as a whole: the last good one keeps running,
  nothing is deleted, the errors are logged, shown on ``/readyz`` and ``/api/status`` and
  counted in ``hookd_config_reloads_total{outcome="rejected"}``;
- the scheduler (apscheduler 3) → periodic reconcile with jitter, retry of failed
  subscriptions with backoff, run-history pruning; no job overlaps itself
  (`hookd.daemon.jobs`);
- ``SIGTERM``/``SIGINT`` → ``STOPPING=1``, the public listener answers 503 while the
  worker finishes in-flight steps (up to ``shutdown_timeout``), the inbox and the store
  are flushed, exit 0. Upstream hooks are left in place: a restart must not churn upstream.

The listeners are built and served by `hookd.daemon.listeners`. Requests see the config
through `hookd.ingest.app.AppState`, whose ``config`` is swapped as one attribute; runs
already started keep the config they began with (the worker reads it once per run). The
daemon holds one `hookd.store.interface.Store`; the worker opens its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hookd import __version__
from hookd.daemon import listeners, pages, reload, revision, sdnotify, series, status
from hookd.daemon.jobs import Jobs
from hookd.daemon.loading import format_report, load, register_secrets
from hookd.diagnostics import Diagnostic
from hookd.telemetry import logs

if TYPE_CHECKING:
    import uvicorn

    from hookd.config.model import Config, Listener
    from hookd.ingest.app import AppState
    from hookd.runs.handle import WorkerHandle
    from hookd.store.interface import Store
    from hookd.store.records import SubscriptionRow

log = logging.getLogger("hookd.daemon.lifecycle")

EXIT_OK, EXIT_INVALID_CONFIG, EXIT_IO = 0, 1, 2
RECENT_FAILURES = 10


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
        self.store: Store | None = None
        self.state: AppState | None = None
        self.worker: WorkerHandle | None = None
        self.server_secret = b""
        self.draining = False
        self.jobs = Jobs(self)
        self._rows: list[SubscriptionRow] = []  # as last read (summary, status)
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        # The admin listener's `AdminAuth` for the running config (follows reloads).
        self.admin_auth = listeners.AdminAuthSource(lambda: self.config)
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
            await self._open_store()  # fails here, loudly, on a bad state directory
        except Exception as exc:
            log.error("cannot open the state store",
                      extra={"state_dir": str(settings.state_dir), "error": str(exc)})
            await self._close()
            return EXIT_IO
        register_secrets(self.config)
        self.state = await self._app_state()
        try:
            self.admin_auth()  # the token exists (or is readable) before anyone can ask
        except Exception as exc:
            log.error("cannot read or create the admin token", extra={"error": str(exc)})
            await self._close()
            return EXIT_IO
        public, admin = listeners.build_apps(self.state, self.status_facts, self.admin_auth,
                                             self._page_routes(self.state))
        guards = listeners.guards(settings, self.state.metrics)
        servers = [
            listeners.make_server(public, settings.public.host, settings.public.port,
                                  settings, guards[0]),
            listeners.make_server(admin, settings.admin.host, settings.admin.port,
                                  settings, guards[1]),
        ]
        inherited = listeners.inherited_socket(self.env)
        serving = [
            asyncio.create_task(listeners.serve(servers[0], [inherited] if inherited else None)),
            asyncio.create_task(listeners.serve(servers[1], None)),
        ]
        if not await listeners.started(servers, serving):
            log.error("a listener failed to start (address in use or not allowed?)", extra={
                "public": f"{settings.public.host}:{settings.public.port}",
                "admin": f"{settings.admin.host}:{settings.admin.port}"})
            await listeners.stop_servers(servers, serving)
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
        self.worker = await self._make_worker()
        assert self.store is not None
        self.store.deliveries.on_arrival(self.worker.poke)  # inbox commits, replays
        await self.worker.start()
        self._spawn(self.reloader.watch(self._reconcile_soon), "watch")
        await asyncio.to_thread(importlib.import_module, "hookd.reconcile.reconciler")
        self.jobs.start_leading()  # reconciles at once when elected (on_start: at start)
        scheduler = await self.jobs.start_scheduler()

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
        await listeners.stop_servers(servers, serving)
        await self._close()
        log.info("stopped", extra={"uptime": round(time.time() - self.started_at, 3)})
        return EXIT_OK

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ parts

    async def _make_worker(self) -> WorkerHandle:
        """The pipeline worker: in a child process of its own (`hookd.runs.worker_process`,
        ``worker.mode: process``, the default), which gives the pipelines a CPU core apart
        from the callback listener at the cost of a second interpreter, or in this process
        (``inline``). ``HOOKD_WORKER`` overrides hookd.yaml. The mode and ``claim_lease`` are
        read at start."""
        assert self.state is not None
        mode = self.env.get("HOOKD_WORKER") or self.config.settings.worker_mode
        if mode == "process":
            module = await asyncio.to_thread(importlib.import_module, "hookd.runs.worker_process")
            settings = self.config.settings
            worker: WorkerHandle = module.ProcessWorker(
                self.state, lease=settings.claim_lease, log_format=settings.log_format,
                log_level=settings.log_level)
            return worker
        module = await asyncio.to_thread(importlib.import_module, "hookd.runs.worker")
        worker = module.Worker(self.state, lease=self.config.settings.claim_lease)
        return worker

    async def _open_store(self) -> None:
        from hookd import store as stores

        self.store = stores.open(self.config.settings)
        await self.store.start()
        self.server_secret = await self.store.server_secret()

    def _page_routes(self, state: AppState) -> list[Any]:
        jobs = self.jobs
        return pages.routes(
            state, self.server_secret, lambda: pages.daemon_view(
                revision=self.revision, started_at=self.started_at,
                last_reload=self.reloader.last, last_reconcile=jobs.last_pass,
                scheduler=jobs.scheduler),
            token=lambda: self.admin_auth().token,
            poke=lambda: self.worker.poke() if self.worker is not None else None,
            draining=lambda: self.draining)

    async def _app_state(self) -> AppState:
        from hookd.ingest.app import AppState
        from hookd.telemetry import metrics

        assert self.store is not None
        rows = await self.read_subscriptions()
        state = AppState(self.config, self.store, self.server_secret, rows=rows)
        for source in series.daemon_series(metrics, self.reloader, lambda: self.draining,
                                           lambda: self.revision):
            state.metrics.add(source)
        return state

    async def _close(self) -> None:
        await self.jobs.stop_leading()  # another replica may lead at once
        if self.state is not None:
            with contextlib.suppress(Exception):
                await self.state.aclose()  # commits what the inbox holds
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.aclose()
            self.store = None

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
        for name, port in listeners.bound_ports(servers).items():
            self._bound.setdefault(name, port)
        config = self._with_bound_ports(self.config)
        if config is not self.config:
            self.config = config
            if self.state is not None:
                await asyncio.to_thread(setattr, self.state, "config", config)

    def _with_bound_ports(self, config: Config) -> Config:
        return listeners.with_ports(config, self._bound)

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
            # Builds the new route table (it compiles each flow's payload schema) on a
            # thread and then swaps one attribute: requests see the old or the new config,
            # never a mix, and the listeners keep answering meanwhile.
            await self.state.refresh(config)
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
        """One pass at a time (`hookd.daemon.jobs.Jobs.reconcile`)."""
        await self.jobs.reconcile(reason)

    # ------------------------------------------------------------------ status

    async def read_subscriptions(self) -> list[SubscriptionRow]:
        """The subscriptions from the store (kept for `summary`); the last known ones
        when the store cannot answer now."""
        if self.store is not None:
            try:
                self._rows = await self.store.subscriptions.all()
            except Exception as exc:
                log.warning("cannot read subscriptions", extra={"error": str(exc)})
        return self._rows

    def summary(self) -> str:
        counts = status.state_counts((r.status, r.last_error) for r in self._rows)
        line = status.summary_line(sum(f.enabled for f in self.config.flows.values()), counts)
        if not self.reloader.last.ok:
            line += f"; config {self.reloader.last.revision} rejected"
        return line

    async def status_facts(self) -> status.StatusFacts:
        assert self.store is not None
        rows = await self.read_subscriptions()
        counts = status.state_counts((r.status, r.last_error) for r in rows)
        failures = [
            status.Failure("subscription", r.flow, r.id, r.last_error or r.status, r.updated_at)
            for r in rows if status.shown_state(r.status, r.last_error) in status.FAILING_STATES
        ]
        failures += [
            status.Failure("run", r.flow, r.id, r.error or "failed", r.finished_at)
            for r in await self.store.runs.list(status="failed", limit=RECENT_FAILURES)
        ]
        failures.sort(key=lambda f: f.at or 0, reverse=True)
        # Errors quote upstream answers and URLs: mask secrets as the logs do.
        failures = [dataclasses.replace(f, error=logs.REDACTOR.redact(f.error)) for f in failures]
        return status.StatusFacts(
            version=__version__, started_at=self.started_at, now=time.time(),
            revision=self.revision, flows=sum(f.enabled for f in self.config.flows.values()),
            last_reload=self.reloader.last, subscriptions=counts,
            inbox_depth=await self.store.deliveries.depth(),
            runs_last_hour=await self.store.runs.since(time.time() - 3600),
            failures=failures[:RECENT_FAILURES], draining=self.draining,
            connections=self._unready_connections(),
            extra={"store": {**await self.store.describe(), "leading": self.jobs.leading}},
        )

    def _unready_connections(self) -> dict[str, tuple[str, str]]:
        """``oauth:`` connections in use that cannot authenticate (read from the token
        files: a few small reads, on the admin listener's request)."""
        from hookd.oauth.readiness import unready, used_connections
        from hookd.store.tokens import open_tokens

        store = open_tokens(self.config.settings)
        try:
            found = unready(self.config, store.get, time.time(), used_connections(self.config))
        except OSError as exc:
            return {"?": (str(exc), "check the state directory")}
        return {u.connection.name: (u.problem, u.hint) for u in found}


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
