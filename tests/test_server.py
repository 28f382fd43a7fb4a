"""The public callback listener, end to end: a real uvicorn on 127.0.0.1, a real SQLite
file, real GitHub payloads signed as GitHub signs them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from hookd import store as stores
from hookd.callbacks.verify import sign
from hookd.ingest.app import AppState, create_app
from hookd.runs.worker import Worker
from hookd.store.sqlite.db import open_db
from hookd.store.sqlite.deliveries import DeliveryStore
from hookd.store.sqlite.subscriptions import SubscriptionRow, SubscriptionStore
from hookd.subscriptions import tokens
from tests.ingest_launcher import DATA, Target, make_config, subscription

PUSH = (DATA / "github" / "push.0.json").read_bytes()
PING = (DATA / "github" / "ping.0.json").read_bytes()
ISSUES = (DATA / "github" / "issues.0.json").read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Switch:
    """An ASGI app that forwards to whichever app a test installs: one uvicorn per module,
    a fresh hookd (state directory, store, inbox) per test."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class Listener:
    """uvicorn on 127.0.0.1 in a thread."""

    def __init__(self) -> None:
        self.switch = Switch()
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(
            self.switch, host="127.0.0.1", port=self.port, log_level="warning",
            lifespan="off", loop="asyncio",
        ))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class Hookd:
    """A running public listener plus handles on its state and store."""

    def __init__(self, state_dir: Path, *, max_body: int | None = None,
                 listener: Listener | None = None, **store_options: Any) -> None:
        self.state_dir = state_dir
        self.own_listener = listener is None
        self.listener = listener or Listener()
        self.port = self.listener.port
        self.config = make_config(state_dir, f"http://127.0.0.1:{self.port}")
        self.conn = open_db(state_dir, check_same_thread=False)  # the tests' own, to look
        self.hookd_store = stores.open(self.config.settings, **store_options)
        self.state = AppState(self.config, self.hookd_store,
                              tokens.load_or_create_server_secret(state_dir), max_body=max_body)
        self.listener.switch.app = create_app(self.state)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        self.store = DeliveryStore(open_db(state_dir))

    def target(self, flow: str) -> Target:
        return subscription(self.config, self.state_dir, flow)

    def post(
        self, flow: str, body: bytes, *, event: str = "push", sign_with: str | None = None,
        delivery: str | None = None, headers: dict[str, str] | None = None, path: str | None = None,
    ) -> httpx.Response:
        t = self.target(flow)
        h = {"content-type": "application/json", "x-github-event": event}
        h.update(sign(t.verification, t.secret if sign_with is None else sign_with, body, now=time.time()))
        if delivery:
            h["x-github-delivery"] = delivery
        h.update(headers or {})
        return self.client.post(path or t.path, content=body, headers=h)

    def close(self) -> None:
        self.client.close()
        if self.own_listener:
            self.listener.close()
        self.hookd_store.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.fixture
def hookd(tmp_path: Path, listener: Listener) -> Iterator[Hookd]:
    h = Hookd(tmp_path / "state", max_body=64 * 1024, listener=listener)
    yield h
    h.close()


def test_real_github_push_signed_is_accepted_and_recorded(hookd: Hookd) -> None:
    r = hookd.post("push", PUSH, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert r.status_code == 202, r.text
    d = hookd.store.get(r.json()["delivery"])
    assert d is not None and d.status == "queued"
    assert d.body == PUSH  # the raw body, byte for byte
    assert d.flow == "push" and d.event == "push" and d.flags == ()
    assert d.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert d.headers["x-github-event"] == "push"
    assert hookd.state.metrics.deliveries.value(d.subscription_id, "push", "accepted") == 1


@pytest.mark.parametrize("name", ["push.0.json", "push.1.json", "push.2.json"])
def test_every_real_push_fixture_is_accepted(hookd: Hookd, shared_dir: Path, name: str) -> None:
    body = (shared_dir / "fixtures" / "github-webhooks" / name).read_bytes()
    assert hookd.post("push", body).status_code == 202


def test_wrong_signature_is_401_and_nothing_recorded(hookd: Hookd) -> None:
    r = hookd.post("push", PUSH, sign_with="not the secret")
    assert r.status_code == 401
    assert "X-Hub-Signature-256" in r.json()["error"]
    r = hookd.post("push", PUSH, headers={"x-hub-signature-256": ""})
    assert r.status_code == 401
    assert hookd.store.depth() == 0
    sub = hookd.target("push").subscription_id
    assert hookd.state.metrics.verification_failures.value(sub, "push") == 2


def test_unknown_subscription_and_wrong_token_look_the_same(hookd: Hookd) -> None:
    t = hookd.target("push")
    good_token = t.path.rsplit("/", 1)[1]
    wrong_token = hookd.post("push", PUSH, path=f"/hooks/{t.subscription_id}/hkd1_{'A' * 43}")
    unknown = hookd.post("push", PUSH, path=f"/hooks/nope-0000000000/{good_token}")
    assert wrong_token.status_code == unknown.status_code == 404
    assert wrong_token.content == unknown.content
    assert hookd.store.depth() == 0


def test_disabled_flow_is_503(hookd: Hookd) -> None:
    r = hookd.post("paused", PUSH)
    assert r.status_code == 503 and r.headers["retry-after"]
    assert hookd.store.depth() == 0


def _row(sub_id: str, flow: str, status: str = "active", secret: str = "s") -> SubscriptionRow:
    return SubscriptionRow(
        id=sub_id, flow=flow, fingerprint="f", connector="github", operation="webhook-trigger",
        connection=None, scope=None, parameters={}, location=None, upstream_id="1",
        secret=secret, status=status,  # type: ignore[arg-type]
    )


def test_subscription_being_deleted_is_410(hookd: Hookd) -> None:
    secret = hookd.state.server_secret
    subs = SubscriptionStore(hookd.conn)
    subs.upsert(_row("old-push-0000000001", "push", status="deleting"))
    subs.upsert(_row("gone-flow-000000002", "removed-flow"))
    for sub_id in ("old-push-0000000001", "gone-flow-000000002"):
        path = f"/hooks/{sub_id}/{tokens.callback_token(secret, sub_id)}"
        assert hookd.post("push", PUSH, path=path).status_code == 410


def test_superseded_subscription_of_a_live_flow_still_delivers(hookd: Hookd) -> None:
    """A flow changed (new subscription id); its old hook delivers until it is replaced."""
    secret = hookd.state.server_secret
    SubscriptionStore(hookd.conn).upsert(_row("old-push-0000000003", "push", secret="old"))
    path = f"/hooks/old-push-0000000003/{tokens.callback_token(secret, 'old-push-0000000003')}"
    r = hookd.post("push", PUSH, path=path, sign_with="old")
    assert r.status_code == 202
    assert hookd.store.get(r.json()["delivery"]).flow == "push"  # type: ignore[union-attr]


def test_oversized_body_is_413_without_reading_it(hookd: Hookd) -> None:
    big = b'{"a": "' + b"x" * (65 * 1024) + b'"}'
    assert hookd.post("push", big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"a": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    t = hookd.target("push")
    r = hookd.client.post(t.path, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert hookd.store.depth() == 0


def test_claimed_huge_content_length_is_refused_before_the_body(hookd: Hookd) -> None:
    t = hookd.target("push")
    with socket.create_connection(("127.0.0.1", hookd.port)) as s:
        s.sendall(
            f"POST {t.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {30 * 1024 * 1024}\r\n\r\n".encode()
        )
        s.settimeout(5)
        assert s.recv(100).startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (PUSH, "text/plain", "content type"),
        (PUSH, "", "content type"),
        (b"{not json", "application/json", "invalid JSON"),
        (b"", "application/json", "empty body"),
        (b"\xff\xfe", "application/json", "invalid JSON"),
        (b"[" * 50_000, "application/json", "invalid JSON"),
    ],
)
def test_malformed_bodies_are_400_with_a_one_line_reason(
    hookd: Hookd, body: bytes, content_type: str, reason: str
) -> None:
    r = hookd.post("push", body, headers={"content-type": content_type})
    assert r.status_code == 400
    error = r.json()["error"]
    assert reason in error and "\n" not in error
    assert hookd.store.depth() == 0


def test_replayed_delivery_id_is_recorded_once(hookd: Hookd) -> None:
    first = hookd.post("push", PUSH, delivery="d-1")
    again = hookd.post("push", PUSH, delivery="d-1")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == {"delivery": first.json()["delivery"], "duplicate": True}
    assert hookd.store.counts()["queued"] == 1


def test_concurrent_copies_of_one_delivery_are_recorded_once(hookd: Hookd) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: hookd.post("push", PUSH, delivery="same"), range(16)))
    ids = {a.json()["delivery"] for a in answers}
    assert len(ids) == 1
    assert sorted(a.status_code for a in answers) == [200] * 15 + [202]
    assert hookd.store.depth() == 1


def test_ping_marks_the_subscription_verified_and_runs_nothing(hookd: Hookd) -> None:
    t = hookd.target("push")
    SubscriptionStore(hookd.conn).upsert(replace(_row(t.subscription_id, "push"), secret=t.secret))
    r = hookd.post("push", PING, event="ping")
    assert r.status_code == 200 and r.json()["ping"] == "ok"
    assert hookd.store.depth() == 0
    row = SubscriptionStore(hookd.conn).get(t.subscription_id)
    assert row is not None and row.verified_at is not None


def test_schema_reject_names_the_violation(hookd: Hookd) -> None:
    r = hookd.post("strict", ISSUES, event="issues")
    assert r.status_code == 400
    assert any("ref" in v for v in r.json()["violations"])
    assert hookd.store.depth() == 0
    assert hookd.post("strict", PUSH).status_code == 202  # extra properties are fine


def test_integers_beyond_64_bits_are_integers_for_the_schema(hookd: Hookd) -> None:
    doc = json.loads(PUSH)
    doc["repository"]["id"] = 2**70  # the schema says integer; a fast parser may say float
    big = json.dumps(doc).encode()
    assert hookd.post("strict", big).status_code == 202
    doc["repository"]["id"] = 1.5
    r = hookd.post("strict", json.dumps(doc).encode())
    assert r.status_code == 400 and any("repository/id" in v for v in r.json()["violations"])
    r = hookd.post("push", big)
    d = hookd.store.get(r.json()["delivery"])
    assert d is not None and d.flags == () and d.body == big


def test_schema_warn_records_and_the_worker_flags(hookd: Hookd) -> None:
    # The listener only checks that the body is JSON (payload_validation: warn); the
    # worker checks the schema when it runs the delivery, and flags it.
    wrong = hookd.post("push", ISSUES, event="issues")
    right = hookd.post("push", PUSH)
    assert wrong.status_code == 202 and right.status_code == 202
    wrong_id, right_id = wrong.json()["delivery"], right.json()["delivery"]
    assert hookd.store.get(wrong_id).flags == ()  # type: ignore[union-attr]

    async def run_worker() -> None:
        worker = Worker(lambda: hookd.config, poll_interval=0.05)
        await worker.start()
        try:
            await worker.idle(20)
        finally:
            await worker.stop(5)

    asyncio.run(run_worker())
    flagged, clean = hookd.store.get(wrong_id), hookd.store.get(right_id)
    assert flagged is not None and flagged.flags == ("schema-warning",)
    assert flagged.status == "done"  # warn: the run goes ahead
    assert clean is not None and clean.flags == () and clean.status == "done"


def test_batch_trigger_records_one_delivery_per_item(hookd: Hookd) -> None:
    body = json.dumps([{"id": 1}, {"id": 2}, {"id": 3}]).encode()
    r = hookd.post("items", body)
    assert r.status_code == 202
    ids = r.json()["deliveries"]
    assert [hookd.store.get(i).json() for i in ids] == [{"id": 1}, {"id": 2}, {"id": 3}]  # type: ignore[union-attr]
    assert hookd.post("items", b'[{"id": 1}, {"name": "no id"}]').status_code == 400


def test_gitlab_token_is_checked_and_never_stored(hookd: Hookd) -> None:
    t = hookd.target("gitlab")
    h = {"content-type": "application/json", "x-gitlab-token": t.secret, "x-gitlab-event": "Push Hook"}
    r = hookd.client.post(t.path, content=b'{"object_kind": "push"}', headers=h)
    assert r.status_code == 202
    d = hookd.store.get(r.json()["delivery"])
    assert d is not None and "x-gitlab-token" not in d.headers and d.event == "Push Hook"
    h["x-gitlab-token"] = "wrong"
    assert hookd.client.post(t.path, content=b"{}", headers=h).status_code == 401


def test_standard_webhooks_and_the_open_http_trigger(hookd: Hookd) -> None:
    assert hookd.post("standard", b'{"type": "x"}').status_code == 202
    assert hookd.post("signed", b'{"type": "x"}').status_code == 202
    t = hookd.target("signed")
    unsigned = hookd.client.post(t.path, content=b"{}", headers={"content-type": "application/json"})
    assert unsigned.status_code == 401
    t = hookd.target("open")  # verification none: the URL is the credential
    r = hookd.client.post(t.path, json={"hello": "world"})
    assert r.status_code == 202


def test_public_listener_serves_only_hooks(hookd: Hookd) -> None:
    t = hookd.target("push")
    assert hookd.client.get(t.path).status_code == 405
    for path in ("/metrics", "/healthz", "/api/runs", "/hooks/x", "/"):
        assert hookd.client.get(path).status_code == 404


def test_config_swap_takes_effect_on_the_next_request(hookd: Hookd) -> None:
    assert hookd.post("gitea", b"{}").status_code == 202
    flows = dict(hookd.config.flows)
    flows["gitea"] = replace(flows["gitea"], enabled=False)
    hookd.state.config = replace(hookd.config, flows=flows)
    assert hookd.post("gitea", b"{}").status_code == 503


def test_draining_answers_503(hookd: Hookd) -> None:
    hookd.state.draining = True
    r = hookd.post("push", PUSH)
    assert r.status_code == 503 and r.headers["retry-after"]


def test_store_failure_is_503_so_the_upstream_retries(hookd: Hookd) -> None:
    hookd.state.inbox.close()  # e.g. stopping: nothing can be recorded any more
    r = hookd.post("push", PUSH)
    assert r.status_code == 503


def test_latency_histogram_counts_requests(hookd: Hookd) -> None:
    hookd.post("push", PUSH)
    hookd.post("push", PUSH, sign_with="x")
    m: Any = hookd.state.metrics
    assert m.request_seconds.count("accepted") == 1 and m.request_seconds.count("unauthorized") == 1
