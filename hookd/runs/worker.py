"""Take recorded deliveries from the durable inbox and run their flows.

The callback server only records; this is the consumer. One asyncio task loops: claim as
many deliveries as there are free slots (the global ``workers`` limit, and each flow's
``concurrency``), start one task per delivery, and sleep until `poke` (the store's
wake-up hook: the inbox committed something, a replay) or a short poll interval — the
poll is the fallback for what no wake-up reports (another process's write, a lease that
expired).

Claims are leases (``claim_lease`` in hookd.yaml, the daemon passes it; renewed every
third of that while the run goes on):
when the worker cannot write a run's outcome (disk full), it stops renewing and the
delivery is claimed again once the lease ran out, instead of staying ``running`` until
a restart. A delivery claimed again while this worker still runs it (a renewal that
failed) is left to the task that has it.

Per delivery: resume its unfinished run if there is one (a crash or a stop interrupted
it; finished steps are not executed again), otherwise create a new run (the first, or a
replay's). In-flight runs keep the `Config` they started with, so a reload never changes
a run half-way. The run's outcome decides the delivery's: ``done``, ``failed`` (the dead
letter, kept with its run for ``hookd replay``), or back to ``queued`` when the worker
stopped before the run finished. Before a fresh run of a single body whose flow has
``payload_validation: warn``, the worker checks the body against the trigger's schema
(the listener only checked that it is JSON: `hookd.callbacks.payload`), logs the violations and
flags the delivery ``schema-warning``; the run goes ahead either way.

The store is opened with the ``worker`` role (`hookd.store.open`): the SQLite backend then
commits the writes all runs make during one turn of the event loop together, without
waiting for the write lock on the loop.

`hookd.runs.worker_process.ProcessWorker` runs this same worker in a child process, so that
pipelines and the callback listener use two cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from hookd import store as stores
from hookd.callbacks import payload, routing
from hookd.config import model
from hookd.runs.actions import ActionContext
from hookd.runs.actions.run import base_env
from hookd.runs.handle import ConfigSource
from hookd.runs.pipeline import Outcome, Pipeline
from hookd.store.interface import DeliveryQueue, RunHistory, Store
from hookd.store.records import FLAG_SCHEMA_WARNING, Delivery
from hookd.upstream.client import Upstream

log = logging.getLogger("hookd.runs.worker")

LEASE = model.CLAIM_LEASE  # seconds a claim lasts without renewal (hookd.yaml claim_lease)


class Worker:
    """Runs flows for recorded deliveries (see module docstring).

    `source` is either a callable returning the current `Config`, or an object with a
    ``config`` attribute (the daemon's app state, whose config is swapped on reload).
    `store` defaults to the config's, opened with the ``worker`` role at `start`; whoever
    records deliveries wakes the worker through that store's ``on_arrival`` (the daemon
    wires its own store's to `poke`).
    """

    def __init__(
        self,
        source: ConfigSource,
        *,
        store: Store | None = None,
        state_dir: Path | None = None,
        limit: int | None = None,
        poll_interval: float = 0.5,
        sweep_interval: float = 10.0,
        lease: float = LEASE,
        transport: httpx.AsyncBaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if callable(source):
            self._get_config: Callable[[], model.Config | None] = source
        else:
            self._get_config = lambda: source.config
        self._store = store
        self._own_store = store is None
        self.lease = lease
        self._state_dir = state_dir
        self.limit = limit
        self.poll_interval = poll_interval
        self.sweep_interval = sweep_interval
        self._transport = transport
        self._environ = os.environ if environ is None else environ
        self._sleep = sleep
        self._rng = rng
        self.runs: RunHistory
        self.deliveries: DeliveryQueue
        self._unsubscribe: Callable[[], None] | None = None
        self._renewed = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._active: dict[asyncio.Task[None], Delivery] = {}
        self._by_flow: Counter[str] = Counter()
        self._stopping = False
        self._http: httpx.AsyncClient | None = None
        self._upstream: Upstream | None = None
        self._env_cache: tuple[model.Config, Mapping[str, str]] | None = None
        # Schema checks by flow name, for one config (see _check_payload).
        self._checks: tuple[model.Config | None, dict[str, routing.SchemaCheck | None]] = (
            None, {})
        self.counts: Counter[str] = Counter()  # runs by outcome, for metrics

    # ------------------------------------------------------------------ lifecycle

    @property
    def state_dir(self) -> Path:
        if self._state_dir is not None:
            return self._state_dir
        config = self._get_config()
        if config is None:
            raise RuntimeError("worker: no config to find the state directory in")
        return config.settings.state_dir

    def _store_where(self) -> model.Settings | Path:
        """hookd.yaml's store (PostgreSQL or SQLite) in this worker's state directory."""
        config = self._get_config()
        if config is None:
            return self.state_dir
        return dataclasses.replace(config.settings, state_dir=self.state_dir)

    async def start(self) -> None:
        """Open the store, put back deliveries a dead process left running, start looping."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._store is None:
            self._store = stores.open(self._store_where(), role="worker")
        await self._store.start()
        self.runs = self._store.runs
        self.deliveries = self._store.deliveries
        self._unsubscribe = self.deliveries.on_arrival(self.poke)
        self._http = httpx.AsyncClient(transport=self._transport, follow_redirects=False,
                                       headers={"User-Agent": "hookd"})
        from hookd.store.tokens import open_tokens
        from hookd.upstream.oauth import attach

        self._upstream = attach(Upstream(transport=self._transport),
                                open_tokens(self._store_where()))
        self.pipeline = Pipeline(store=self.runs, sleep=self._sleep, rng=self._rng,
                                 environ=self._environ)
        requeued = await self.deliveries.recover()
        if requeued:
            log.info("requeued interrupted deliveries", extra={"count": requeued})
        self._stopping = False
        self._task = asyncio.create_task(self._run_loop(), name="hookd-worker")

    def poke(self) -> None:
        """Wake the loop now (safe from any thread): the inbox has new deliveries."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop taking work; let running steps finish (no new step starts) for up to
        `timeout` seconds (default: the config's ``shutdown_timeout``), then cancel what
        is left — those runs and their deliveries go back to ``queued``."""
        if timeout is None:
            config = self._get_config()
            timeout = config.settings.shutdown_timeout if config is not None else 30.0
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        pending = set(self._active)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._http is not None:
            await self._http.aclose()
        if self._upstream is not None:
            with contextlib.suppress(Exception):
                await self._upstream.aclose()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._store is not None and self._own_store:
            await self._store.aclose()
            self._store = None

    @property
    def active(self) -> int:
        return len(self._active)

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until nothing is queued or running (tests and benchmarks)."""
        async with asyncio.timeout(timeout):
            while True:
                depth = await self.deliveries.depth()
                if depth == 0 and not self._active:
                    return
                self.poke()
                await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ the loop

    async def _run_loop(self) -> None:
        assert self._wake is not None
        idle_for = 0.0
        while not self._stopping:
            self._wake.clear()
            await self._renew_leases()
            try:
                started = await self._claim_and_start()
            except Exception:
                log.exception("worker: claiming deliveries failed; retrying")
                started = 0
            if started:
                idle_for = 0.0
                continue
            wait = min(self.poll_interval, self.lease / 3)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            idle_for += wait
            if idle_for >= self.sweep_interval and not self._stopping:
                idle_for = 0.0
                with contextlib.suppress(Exception):
                    await self._sweep_unknown_flows()

    async def _renew_leases(self) -> None:
        """Every third of a lease: extend the claims of the deliveries still running. A
        failure is logged and retried at the next turn; if it lasts, the leases expire
        and the deliveries are claimed again (`_start` leaves those still running here)."""
        now = time.monotonic()
        if not self._active or now - self._renewed < self.lease / 3:
            return
        try:
            await self.deliveries.renew([d.id for d in self._active.values()], self.lease)
            self._renewed = now
        except Exception as exc:
            log.warning("worker: cannot renew its claims", extra={"error": str(exc)})

    def _slots(self, config: model.Config) -> int:
        limit = self.limit if self.limit is not None else config.settings.workers
        return max(limit, 1) - len(self._active)

    async def _claim_and_start(self) -> int:
        config = self._get_config()
        if config is None:
            return 0
        free = self._slots(config)
        if free <= 0:
            return 0
        claimed: list[Delivery] = []
        unlimited: list[str] = []
        for name, flow in config.flows.items():
            if flow.concurrency is None:
                unlimited.append(name)
                continue
            room = min(flow.concurrency - self._by_flow[name], free - len(claimed))
            if room > 0:
                claimed += await self.deliveries.claim(room, flows=[name], lease=self.lease,
                                                       max_running=flow.concurrency)
        room = free - len(claimed)
        if room > 0 and len(unlimited) == len(config.flows):
            # No flow is limited: claim without a flow filter (the plain status index is
            # the fast path; deliveries of unknown flows are failed in _process).
            claimed += await self.deliveries.claim(room, lease=self.lease)
        elif room > 0 and unlimited:
            claimed += await self.deliveries.claim(room, flows=unlimited, lease=self.lease)
        running = {d.id for d in self._active.values()}
        fresh = [d for d in sorted(claimed, key=lambda d: d.id) if d.id not in running]
        for delivery in fresh:
            self._start(delivery, config)
        return len(fresh)

    def _start(self, delivery: Delivery, config: model.Config) -> None:
        if not self._active:
            self._renewed = time.monotonic()  # the first claim's lease is fresh
        task = asyncio.create_task(self._process(delivery, config),
                                   name=f"hookd-run-{delivery.id}")
        self._active[task] = delivery
        self._by_flow[delivery.flow] += 1

        def done(t: asyncio.Task[None]) -> None:
            self._active.pop(t, None)
            self._by_flow[delivery.flow] -= 1
            if self._wake is not None:
                self._wake.set()  # a slot is free

        task.add_done_callback(done)

    async def _sweep_unknown_flows(self) -> None:
        """Deliveries of flows no longer in the config would sit queued forever: fail them
        (with a run saying why), so they show up in ``hookd runs --status failed``."""
        config = self._get_config()
        if config is None:
            return
        unknown = [f for f in await self.deliveries.queued_flows() if f not in config.flows]
        if not unknown:
            return
        for delivery in await self.deliveries.claim(1000, flows=unknown, lease=self.lease):
            await self._fail_unknown(delivery, config)

    async def _fail_unknown(self, delivery: Delivery, config: model.Config) -> None:
        error = f"flow '{delivery.flow}' is not in the current config"
        await self.runs.create(delivery.id, delivery.flow, config_revision=config.revision,
                               status="failed", error=error)
        await self.deliveries.finish(delivery.id, "failed", error)
        self.counts["failed"] += 1
        log.warning("delivery of an unknown flow", extra={"delivery": delivery.id,
                                                          "flow": delivery.flow})

    # ------------------------------------------------------------------ one delivery

    async def _process(self, delivery: Delivery, config: model.Config) -> None:
        flow = config.flows.get(delivery.flow)
        if flow is None:
            await self._fail_unknown(delivery, config)
            return
        runs = self.runs
        started = time.monotonic()
        # A delivery claimed for the first time has no run yet; otherwise it was
        # interrupted (crash, stop) or replayed: resume its unfinished run, if any.
        latest = None
        if delivery.attempts > 1:
            latest = await runs.latest_for_delivery(delivery.id)
        fresh = not (latest is not None and latest.status in ("queued", "running"))
        if fresh:
            run = await runs.create(delivery.id, flow.name, config_revision=config.revision,
                                    status="running")
            run_id, attempt = run.id, run.attempt
            await self._check_payload(delivery, flow, config)
        else:
            assert latest is not None
            run_id, attempt = latest.id, latest.attempt
        actx = ActionContext(
            http=self._http,  # type: ignore[arg-type]
            flow=flow.name,
            run_id=run_id,
            delivery_id=delivery.id,
            config=config,
            upstream=self._upstream,
            base_env=self._base_env(config),
        )
        try:
            outcome = await self.pipeline.execute(
                flow, delivery, run_id, actx, attempt=attempt,
                env_allow=config.settings.env_allow, should_stop=lambda: self._stopping,
                fresh=fresh, finish_delivery=True,
            )
        except asyncio.CancelledError:
            # Stopped past the shutdown timeout: resume this run at the next start.
            await asyncio.shield(self._requeue(run_id, delivery.id))
            raise
        except Exception as exc:  # a bug or a broken store: keep the worker alive
            log.exception("run crashed", extra={"run": run_id, "flow": flow.name})
            outcome = Outcome("failed", f"internal error: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                # If this write fails too, the lease expires and the delivery runs again.
                await runs.finish(run_id, "failed", outcome.error, delivery_id=delivery.id)
        self.counts[outcome.status] += 1
        # One line per finished run, as operators of adnanh/webhook expect to tail.
        fields = {"run": run_id, "flow": flow.name, "delivery": delivery.id,
                  "outcome": outcome.status, "attempt": attempt,
                  "duration": round(time.monotonic() - started, 3)}
        if outcome.status == "failed":
            log.warning("run finished", extra={**fields, "error": outcome.error})
        else:
            log.info("run finished", extra=fields)

    async def _check_payload(self, delivery: Delivery, flow: model.Flow,
                             config: model.Config) -> None:
        """``payload_validation: warn``: check a single body against the trigger's schema
        and flag the delivery ``schema-warning`` (the listener only checked it is JSON:
        `hookd.callbacks.payload`). The run goes ahead either way."""
        if delivery.item is not None or FLAG_SCHEMA_WARNING in delivery.flags:
            return  # a batch item was checked when the batch was split; flagged already
        cached_for, checks = self._checks
        if cached_for is not config:
            checks = {}
            self._checks = (config, checks)
        if flow.name not in checks:
            checks[flow.name] = routing.deferred_check(flow, config)
        check = checks[flow.name]
        if check is None:
            return
        problems = payload.violations_of(delivery.body, check)
        if problems:
            log.warning("payload does not match the trigger's schema",
                        extra={"flow": flow.name, "delivery": delivery.id, "violations": problems})
            await self.deliveries.add_flag(delivery.id, FLAG_SCHEMA_WARNING)

    def _base_env(self, config: model.Config) -> Mapping[str, str]:
        # Computed once per config (reading os.environ for every run adds up).
        cached = self._env_cache
        if cached is None or cached[0] is not config:
            cached = self._env_cache = (config, base_env(self._environ,
                                                         config.settings.env_allow))
        return cached[1]

    async def _requeue(self, run_id: str, delivery_id: str) -> None:
        with contextlib.suppress(Exception):
            await self.runs.finish(run_id, "queued", delivery_id=delivery_id)
