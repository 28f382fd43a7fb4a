"""hookd.runs.worker: claiming, per-flow concurrency, global limit, stop/resume, replay, CLI."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hookd.cli import main as cli
from hookd.config import model
from hookd.runs.worker import Worker
from hookd.store.sqlite import db as dbmod
from hookd.store.sqlite.deliveries import DeliveryStore
from hookd.store.sqlite.runs import RunStore
from tests.fakes.sink import Received, Sink
from tests.pipeline_util import config, flow, record, step


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


def post(url: str, body: str = "{{ trigger.body.n }}") -> model.HttpAction:
    return model.HttpAction(method="POST", url=url, body=body)


def max_overlap(received: list[Received]) -> int:
    events = sorted([(r.started, 1) for r in received] + [(r.ended, -1) for r in received],
                    key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


async def process(cfg: model.Config, *, limit: int | None = None, timeout: float = 20) -> Worker:
    worker = Worker(lambda: cfg, limit=limit, poll_interval=0.05)
    await worker.start()
    try:
        await worker.idle(timeout)
    finally:
        await worker.stop(5)
    return worker


def test_concurrency_one_serialises_a_flow(tmp_path: Path, sink: Sink) -> None:
    sink.delay = 0.02
    state = tmp_path / "state"
    cfg = config(state, [flow("serial", [step("p", post(sink.url))], concurrency=1)])
    record(state, "serial", [{"n": i} for i in range(20)])
    asyncio.run(process(cfg, limit=8))
    assert len(sink.received) == 20
    ordered = sorted(sink.received, key=lambda r: r.started)
    for prev, nxt in zip(ordered, ordered[1:], strict=False):
        assert nxt.started >= prev.ended, "steps of a concurrency-1 flow overlapped"
    assert [r.text for r in ordered] == [str(i) for i in range(20)]  # and in arrival order


def test_unlimited_flow_runs_in_parallel_up_to_the_global_limit(tmp_path: Path, sink: Sink) -> None:
    sink.delay = 0.1
    state = tmp_path / "state"
    cfg = config(state, [flow("par", [step("p", post(sink.url))])])
    record(state, "par", [{"n": i} for i in range(9)])
    asyncio.run(process(cfg, limit=3))
    assert len(sink.received) == 9
    assert max_overlap(sink.received) == 3


def test_poke_wakes_the_worker_before_the_poll(tmp_path: Path, sink: Sink) -> None:
    state = tmp_path / "state"
    cfg = config(state, [flow("f", [step("p", post(sink.url))])])

    async def go() -> float:
        worker = Worker(lambda: cfg, poll_interval=30)
        await worker.start()
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        record(state, "f", [{"n": 1}])
        worker.poke()
        while not sink.received:
            await asyncio.sleep(0.005)
        took = time.monotonic() - t0
        await worker.stop(5)
        return took

    assert asyncio.run(go()) < 2


def test_graceful_stop_finishes_the_step_and_resumes_later(tmp_path: Path, sink: Sink) -> None:
    sink.delay = 0.5
    state = tmp_path / "state"
    cfg = config(state, [flow("f", [step("one", post(sink.url + "/one")),
                                    step("two", post(sink.url + "/two"))])])
    [did] = record(state, "f", [{"n": 1}])

    async def first() -> None:
        worker = Worker(lambda: cfg, poll_interval=0.05)
        await worker.start()
        while not sink.arrived:  # step one is in flight (the sink holds it 0.5 s)
            await asyncio.sleep(0.01)
        await worker.stop(5)

    asyncio.run(first())
    assert [r.path for r in sink.received] == ["/one"]
    conn = dbmod.open_db(state)
    assert DeliveryStore(conn).get(did).status == "queued"  # type: ignore[union-attr]
    [run] = RunStore(conn).list()
    assert run.status == "queued"
    sink.delay = 0
    asyncio.run(process(cfg))
    assert [r.path for r in sink.received] == ["/one", "/two"]  # one not repeated
    run2 = RunStore(conn).get(run.id)
    assert run2 is not None and run2.status == "succeeded" and len(RunStore(conn).list()) == 1


def test_stop_timeout_cancels_and_kills_the_command(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = config(state, [flow("f", [step("slow", model.RunAction(argv=("sleep", "30")))])])
    [did] = record(state, "f", [{}])

    async def go() -> float:
        worker = Worker(lambda: cfg, poll_interval=0.05)
        await worker.start()
        while worker.active == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        await worker.stop(0.3)
        return time.monotonic() - t0

    assert asyncio.run(go()) < 3
    conn = dbmod.open_db(state)
    assert DeliveryStore(conn).get(did).status == "queued"  # type: ignore[union-attr]
    assert RunStore(conn).list()[0].status == "queued"


def test_delivery_of_an_unknown_flow_fails_visibly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = config(state, [flow("f", [step("s", model.SetAction(values={"a": 1}))])])
    [did] = record(state, "gone", [{}])

    async def go() -> None:
        worker = Worker(lambda: cfg, poll_interval=0.02, sweep_interval=0.05)
        await worker.start()
        await worker.idle(5)
        await worker.stop(1)

    asyncio.run(go())
    [run] = RunStore(dbmod.open_db(state)).list(status="failed")
    assert run.delivery_id == did and "not in the current config" in (run.error or "")


def test_failed_run_is_listed_and_replay_reruns_it(tmp_path: Path, sink: Sink,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    sink.default_status = 500
    cfg = config(state, [flow("deploy", [step("hit", post(sink.url),
                                               retry=model.RetryPolicy(attempts=2, delay=0.01))])])
    record(state, "deploy", [{"n": 7}])
    asyncio.run(process(cfg))
    assert len(sink.received) == 2

    assert cli.main(["runs", "--state", str(state), "--status", "failed", "--format", "json"]) == 0
    [failed] = json.loads(capsys.readouterr().out)["runs"]
    assert failed["flow"] == "deploy" and failed["status"] == "failed"
    assert "status 500" in failed["error"]

    sink.default_status = 200  # the target is fixed
    assert cli.main(["replay", failed["id"][:10], "--state", str(state)]) == 0
    assert "queued delivery" in capsys.readouterr().out
    asyncio.run(process(cfg))
    assert len(sink.received) == 3

    assert cli.main(["runs", "--state", str(state), "--format", "json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["status"], r["attempt"]) for r in runs] == [("succeeded", 2), ("failed", 1)]
    assert cli.main(["runs", "--state", str(state), "--status", "failed"]) == 0
    assert failed["id"] in capsys.readouterr().out
    # replaying something still queued is refused
    assert cli.main(["replay", "nope", "--state", str(state)]) == 1


def test_runs_show_displays_steps(tmp_path: Path, sink: Sink,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    (tmp_path / "hookd.yaml").write_text("public_url: http://x\nstate_dir: state\n")
    cfg = config(state, [flow("f", [step("a", model.SetAction(values={"v": "{{ trigger.body.n }}"})),
                                    step("b", post(sink.url), if_="false")])])
    record(state, "f", [{"n": 5}])
    asyncio.run(process(cfg))
    assert cli.main(["runs", "--config", str(tmp_path), "--format", "json"]) == 0
    [run] = json.loads(capsys.readouterr().out)["runs"]
    assert cli.main(["runs", "--config", str(tmp_path), "show", run["id"]]) == 0
    out = capsys.readouterr().out
    assert "status    succeeded" in out
    assert "[0] a (set)  succeeded" in out and '{"v": 5}' in out
    assert "[1] b (http)  skipped" in out
    assert cli.main(["runs", "show", run["id"], "--config", str(tmp_path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["id"] for s in doc["steps"]] == ["a", "b"]
    assert cli.main(["runs", "--config", str(tmp_path), "show", "ffffffff"]) == 1
    assert cli.main(["runs", "--config", str(tmp_path / "nowhere")]) == 2


@pytest.mark.skipif(sys.platform != "linux", reason="process groups")
def test_worker_exposes_counts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = config(state, [flow("f", [step("s", model.RunAction(argv=("false",)))])])
    record(state, "f", [{}, {}])
    worker = asyncio.run(process(cfg))
    assert worker.counts["failed"] == 2


def test_process_worker_runs_flows_in_a_child_and_follows_config_changes(
    tmp_path: Path, sink: Sink
) -> None:
    from hookd.runs.worker_process import ProcessWorker

    state = tmp_path / "state"
    v1 = config(state, [flow("f", [step("p", post(sink.url + "/v1"))])])
    v2 = config(state, [flow("f", [step("p", post(sink.url + "/v2"))])])
    holder = {"config": v1}

    async def wait_for(n: int) -> None:
        deadline = time.monotonic() + 20
        while len(sink.received) < n:
            assert time.monotonic() < deadline, "child worker did not run the delivery"
            await asyncio.sleep(0.02)

    async def go() -> None:
        worker = ProcessWorker(lambda: holder["config"], poll_interval=0.05)
        await worker.start()
        assert worker.alive
        record(state, "f", [{"n": 1}])
        worker.poke()
        await wait_for(1)
        holder["config"] = v2  # a reload: the next run uses the new flow
        worker.poke()  # as the daemon does on every config swap: push it to the child
        record(state, "f", [{"n": 2}])
        worker.poke()
        await wait_for(2)
        await worker.stop(5)
        assert not worker.alive

    asyncio.run(go())
    assert [(r.path, r.text) for r in sink.received] == [("/v1", "1"), ("/v2", "2")]
    assert [r.status for r in RunStore(dbmod.open_db(state)).list()] == ["succeeded"] * 2


class FailingFinish:
    """A `RunHistory` whose run-outcome writes fail `times` times (a full disk)."""

    def __init__(self, runs: Any, times: int) -> None:
        self.real = runs
        self.failures = times

    def __getattr__(self, name: str) -> Any:  # the other RunHistory methods
        return getattr(self.real, name)

    async def finish(self, *args: Any, **kwargs: Any) -> None:
        from hookd.store import errors

        if self.failures:
            self.failures -= 1
            raise errors.Unavailable("the store cannot do this now: database or disk is full")
        await self.real.finish(*args, **kwargs)


def test_a_claim_whose_outcome_could_not_be_written_runs_again_after_its_lease(
        tmp_path: Path, sink: Sink) -> None:
    """Issue 16 item 10: the worker could not write the run's outcome (both the run's
    write and the fallback failed, as at disk full). The delivery must not stay
    ``running`` until a restart: its lease expires, the same worker claims it again,
    resumes the run (the finished step is not sent again) and finishes it."""
    state = tmp_path / "state"
    cfg = config(state, [flow("f", [step("p", post(sink.url))])])
    [did] = record(state, "f", [{"n": 1}])
    from hookd import store as stores

    store = stores.open(state, role="worker")
    failing = FailingFinish(store.runs, times=2)
    store.runs = failing  # type: ignore[misc]

    async def go() -> None:
        worker = Worker(lambda: cfg, store=store, poll_interval=0.05, lease=0.6)
        await worker.start()
        try:
            await worker.idle(20)
        finally:
            await worker.stop(5)
            await store.aclose()

    asyncio.run(go())
    conn = dbmod.open_db(state)
    delivery = DeliveryStore(conn).get(did)
    assert failing.failures == 0 and delivery is not None
    assert (delivery.status, delivery.attempts) == ("done", 2)
    [run] = RunStore(conn).list(delivery_id=did)
    assert run.status == "succeeded"
    assert len(sink.received) == 1  # resumed: the step that had finished was not repeated


def test_leases_expire_and_renewals_keep_a_claim(tmp_path: Path) -> None:
    conn = dbmod.open_db(tmp_path)
    now = [1000.0]
    store = DeliveryStore(conn, clock=lambda: now[0])
    record(tmp_path, "f", [{}, {}])
    first, second = store.claim(2, lease=10)
    assert store.claim(1, lease=10) == []
    now[0] += 8
    store.renew([first.id], lease=10)  # still running: renewed to 1018
    now[0] += 5  # 1013: the second's lease (1010) ran out, the first's did not
    assert [d.id for d in store.claim(2, lease=10)] == [second.id]
    store.finish(first.id, "done")
    now[0] += 60
    # The finished one is never claimed again; the other's renewed lease ran out (1023).
    assert [d.id for d in store.claim(2, lease=10)] == [second.id]
