"""hookd.runs.pipeline: steps in order, conditions, retries, foreach, resume, redaction."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hookd import store as stores
from hookd.config import model
from hookd.runs.actions import ActionContext
from hookd.runs.pipeline import Outcome, Pipeline, redact, retry_delay
from hookd.store.sqlite import db as dbmod
from hookd.store.sqlite.deliveries import DeliveryStore
from hookd.store.sqlite.runs import RunStore
from tests.fakes.sink import Sink
from tests.pipeline_util import config, flow, push_payload, record, step


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


class Harness:
    def __init__(self, state: Path, environ: dict[str, str] | None = None) -> None:
        self.state = state
        self.conn = dbmod.open_db(state)
        self.store = RunStore(self.conn)  # what the tests read back, straight from the file
        self.sleeps: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        # The pipeline writes through the store's interface, as the worker's does.
        self.history = stores.open(state, role="cli")
        self.pipeline = Pipeline(store=self.history.runs, sleep=fake_sleep, rng=lambda: 0.5,
                                 environ=environ or {})

    def run(self, f: model.Flow, body: Any, *, run_id: str | None = None,
            should_stop: Any = None, env_allow: tuple[str, ...] = ()) -> tuple[Outcome, str]:
        cfg = config(self.state, [f], env_allow=env_allow)
        [did] = record(self.state, f.name, [body])
        delivery = DeliveryStore(self.conn).get(did)
        if run_id is None:
            run_id = self.store.create(did, f.name).id

        async def go() -> Outcome:
            async with httpx.AsyncClient() as client:
                actx = ActionContext(http=client, flow=f.name, run_id=run_id,
                                     delivery_id=did, config=cfg)
                return await self.pipeline.execute(
                    f, delivery, run_id, actx, env_allow=env_allow,
                    should_stop=should_stop or (lambda: False))

        return asyncio.run(go()), run_id


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "state")
    yield harness
    harness.history.close()


def notify_main(url: str) -> model.Flow:
    return flow("gh", [
        step("notify",
             model.HttpAction(method="POST", url=url + "/hook",
                              body="{{ trigger.body.pusher.name }} pushed "
                                   "{{ trigger.body.commits | length }} commit(s) to "
                                   "{{ trigger.body.repository.full_name }}"),
             if_="trigger.body.ref == 'refs/heads/main'"),
        step("after", model.SetAction(values={"status": "{{ steps.notify.status }}"})),
    ])


def test_branch_filter_and_rendered_message(h: Harness, sink: Sink) -> None:
    body = push_payload() | {"ref": "refs/heads/main", "commits": [{"id": "a"}, {"id": "b"}]}
    outcome, run_id = h.run(notify_main(sink.url), body)
    assert outcome == Outcome("succeeded")
    assert [r.text for r in sink.received] == ["Codertocat pushed 2 commit(s) to Codertocat/Hello-World"]
    run = h.store.get(run_id)
    assert run is not None and run.status == "succeeded"
    assert [(s.step_id, s.status) for s in run.steps] == [("notify", "succeeded"), ("after", "succeeded")]
    assert run.steps[0].output["status"] == 200
    assert run.steps[0].input["body"].startswith("Codertocat pushed 2")
    assert run.steps[1].output == {"status": "succeeded"}


def test_branch_filter_skips_other_refs(h: Harness, sink: Sink) -> None:
    outcome, run_id = h.run(notify_main(sink.url), push_payload())  # refs/tags/simple-tag
    assert outcome.status == "succeeded"
    assert sink.received == []
    run = h.store.get(run_id)
    assert run is not None and [s.status for s in run.steps] == ["skipped", "succeeded"]


def test_retry_twice_then_success(h: Harness, sink: Sink) -> None:
    sink.responses = [500, 503]
    f = flow("r", [step("post", model.HttpAction(method="POST", url=sink.url, body={"a": 1}),
                        retry=model.RetryPolicy(attempts=3, delay=2.0, max_delay=60))])
    outcome, run_id = h.run(f, {})
    assert outcome.status == "succeeded"
    assert len(sink.received) == 3
    assert h.sleeps == [1.5, 3.0]  # equal jitter at rng 0.5: 2s→[1,2), 4s→[2,4)
    run = h.store.get(run_id)
    assert run is not None and run.steps[0].attempt == 3 and run.steps[0].status == "succeeded"


def test_always_failing_step_fails_the_run_and_stops_it(h: Harness, sink: Sink) -> None:
    sink.default_status = 502
    f = flow("r", [step("post", model.HttpAction(method="POST", url=sink.url, body="x"),
                        retry=model.RetryPolicy(attempts=2, delay=1)),
                   step("never", model.HttpAction(method="GET", url=sink.url + "/never"))])
    outcome, run_id = h.run(f, {})
    assert outcome.status == "failed"
    assert "status 502" in (outcome.error or "") and "after 2 attempts" in (outcome.error or "")
    assert [r.path for r in sink.received] == ["/", "/"]
    run = h.store.get(run_id)
    assert run is not None and run.status == "failed" and len(run.steps) == 1
    assert run.steps[0].output["status"] == 502  # the failed response is kept


def test_permanent_failure_is_not_retried(h: Harness, sink: Sink) -> None:
    sink.default_status = 404
    f = flow("r", [step("post", model.HttpAction(method="GET", url=sink.url),
                        retry=model.RetryPolicy(attempts=5))])
    outcome, _ = h.run(f, {})
    assert outcome.status == "failed" and len(sink.received) == 1 and h.sleeps == []


def test_continue_on_error(h: Harness, sink: Sink) -> None:
    sink.responses = [500]
    f = flow("r", [step("flaky", model.HttpAction(method="GET", url=sink.url),
                        continue_on_error=True),
                   step("next", model.SetAction(values={"prev": "{{ steps.flaky.status }}"}))])
    outcome, run_id = h.run(f, {})
    assert outcome.status == "succeeded"
    run = h.store.get(run_id)
    assert run is not None and [s.status for s in run.steps] == ["failed", "succeeded"]
    assert run.steps[1].output == {"prev": "failed"}


def test_foreach_with_per_item_condition(h: Harness, sink: Sink) -> None:
    f = flow("r", [step("each", model.HttpAction(method="POST", url=sink.url,
                                                 body="{{ item.id }}"),
                        foreach="{{ trigger.body.commits }}", if_="item.id != 'skip'")])
    outcome, run_id = h.run(f, {"commits": [{"id": "a"}, {"id": "skip"}, {"id": "c"}]})
    assert outcome.status == "succeeded"
    assert [r.text for r in sink.received] == ["a", "c"]
    run = h.store.get(run_id)
    assert run is not None
    out = run.steps[0].output
    assert [o and o["status"] for o in out] == [200, None, 200]


def test_template_error_names_expression_and_missing_name(h: Harness) -> None:
    f = flow("r", [step("s", model.SetAction(values={"x": "{{ trigger.body.pusher.nickname }}"}))])
    outcome, run_id = h.run(f, {"pusher": {"name": "a"}})
    assert outcome.status == "failed"
    run = h.store.get(run_id)
    assert run is not None
    error = run.steps[0].error or ""
    assert "nickname" in error and "{{ trigger.body.pusher.nickname }}" in error
    assert "Traceback" not in error


def test_secrets_are_redacted_in_history_but_sent(tmp_path: Path, sink: Sink) -> None:
    h = Harness(tmp_path / "state", environ={"API_TOKEN": "s3cr3t-value", "PUBLIC": "p"})
    f = flow("r", [step("post", model.HttpAction(
        method="POST", url=sink.url, headers={"Authorization": "Bearer {{ secrets.API_TOKEN }}"},
        body={"env": "{{ env.PUBLIC }}", "echo": "{{ secrets.API_TOKEN }}"}))])
    outcome, run_id = h.run(f, {}, env_allow=("PUBLIC",))
    assert outcome.status == "succeeded"
    assert sink.received[0].headers["authorization"] == "Bearer s3cr3t-value"
    assert sink.received[0].json() == {"env": "p", "echo": "s3cr3t-value"}
    stored = h.conn.execute("SELECT input, output FROM run_steps").fetchone()
    assert "s3cr3t-value" not in stored[0] and "Bearer ***" in stored[0]


def test_values_derived_from_secrets_are_redacted_too(tmp_path: Path, sink: Sink) -> None:
    """Masking exact values let ``{{ secrets['env:T'] | upper }}`` into run history (issue
    16 item 12): what a template that reads secrets renders is masked like the secret,
    in this step and in later ones that copy it."""
    h = Harness(tmp_path / "state", environ={"T": "s3cr3t-value"})
    f = flow("r", [
        step("up", model.SetAction(values={"v": "{{ secrets['env:T'] | upper }}",
                                           "tail": "{{ secrets.T[-5:] | reverse | join }}x"})),
        step("post", model.HttpAction(method="POST", url=sink.url, headers={
            "Authorization": "Token {{ steps.up.output.v }}"},
            body={"copy": "{{ steps.up.output.v }}", "json": "{{ {'t': secrets.T | title} | tojson }}"})),
    ])
    outcome, run_id = h.run(f, {})
    assert outcome.status == "succeeded", outcome.error
    assert sink.received[0].headers["authorization"] == "Token S3CR3T-VALUE"  # sent as is
    stored = " ".join(str(v) for row in h.conn.execute(
        "SELECT input, output FROM run_steps") for v in row)
    for derived in ("S3CR3T-VALUE", "eulav", "S3Cr3T-Value"):
        assert derived not in stored, derived
    assert "Token ***" in stored


def test_env_is_allow_listed(tmp_path: Path) -> None:
    h = Harness(tmp_path / "state", environ={"HIDDEN": "x"})
    f = flow("r", [step("s", model.SetAction(values={"v": "{{ env.HIDDEN }}"}))])
    outcome, _ = h.run(f, {})
    assert outcome.status == "failed" and "HIDDEN" in (outcome.error or "")


def test_missing_secret_fails_the_step_naming_it(h: Harness) -> None:
    f = flow("r", [step("s", model.SetAction(values={"v": "{{ secrets.NOPE }}"}))])
    outcome, _ = h.run(f, {})
    assert outcome.status == "failed" and "NOPE" in (outcome.error or "")


def test_resume_skips_finished_steps_and_reloads_their_output(h: Harness, sink: Sink) -> None:
    f = flow("r", [step("one", model.HttpAction(method="POST", url=sink.url + "/one", body="1")),
                   step("two", model.HttpAction(method="POST", url=sink.url + "/two",
                                                body="{{ steps.one.output.json.n }}"))])
    [did] = record(h.state, "r", [{}])
    run = h.store.create(did, "r")
    # As if a previous process executed step one, then died while step two was running.
    h.store.step_started(run.id, "one", 0, "http", 1, {})
    h.store.step_finished(run.id, "one", "succeeded", output={"status": 200, "json": {"n": 41}})
    h.store.step_started(run.id, "two", 1, "http", 1, {})
    outcome, _ = h.run(f, {}, run_id=run.id)
    assert outcome.status == "succeeded"
    assert [(r.path, r.text) for r in sink.received] == [("/two", "41")]


def test_stop_between_steps_leaves_the_run_queued(h: Harness, sink: Sink) -> None:
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 1  # stop after the first step

    f = flow("r", [step("one", model.HttpAction(method="GET", url=sink.url)),
                   step("two", model.HttpAction(method="GET", url=sink.url))])
    outcome, run_id = h.run(f, {}, should_stop=should_stop)
    assert outcome.status == "queued" and len(sink.received) == 1
    run = h.store.get(run_id)
    assert run is not None and run.status == "queued"


@pytest.mark.parametrize(
    ("policy", "failures", "rnd", "retry_after", "expected"),
    [
        (model.RetryPolicy(delay=1, max_delay=300), 1, 0.0, None, 0.5),
        (model.RetryPolicy(delay=1, max_delay=300), 1, 0.999999, None, 0.9999995),
        (model.RetryPolicy(delay=1, max_delay=300), 4, 0.0, None, 4.0),
        (model.RetryPolicy(delay=1, max_delay=10), 10, 1.0, None, 10.0),
        (model.RetryPolicy(backoff="fixed", delay=3), 5, 0.7, None, 3.0),
        (model.RetryPolicy(delay=1, max_delay=300), 1, 0.0, 30.0, 30.0),
        (model.RetryPolicy(delay=1, max_delay=20), 1, 0.0, 999.0, 20.0),
    ],
)
def test_retry_delay(policy: model.RetryPolicy, failures: int, rnd: float,
                     retry_after: float | None, expected: float) -> None:
    assert retry_delay(policy, failures, rnd, retry_after) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "secrets", "expected"),
    [
        ("Bearer abc123", {"abc123"}, "Bearer ***"),
        ({"h": ["x-abc123-y"], "abc123": 1}, {"abc123"}, {"h": ["x-***-y"], "***": 1}),
        ("abcdef", {"abc", "abcdef"}, "***"),
        (42, {"42"}, 42),
        ("nothing", set(), "nothing"),
    ],
)
def test_redact(value: Any, secrets: set[str], expected: Any) -> None:
    assert redact(value, secrets) == expected
