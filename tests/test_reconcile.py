"""Reconcile against the fake GitHub (a real server on 127.0.0.1) with a real SQLite store."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hookd import store as stores
from hookd.config.model import Config, Connection, Flow, ReconcilePolicy, Settings, Trigger
from hookd.connectors.model import Connector, DeleteStrategy, Operation, WebhookTrigger
from hookd.daemon.status import shown_state
from hookd.reconcile.reconciler import Reconciler
from hookd.reconcile.report import Report
from hookd.store.interface import Store
from hookd.store.sqlite.db import open_db
from hookd.store.sqlite.subscriptions import SubscriptionStore
from hookd.subscriptions import tokens
from hookd.upstream.client import RetryPolicy, Upstream
from tests.fakes.github import FakeGitHub, Faults, github_connector, serve

SECRET = b"r" * 32
PUBLIC = "https://hooks.example.net"


async def _no_sleep(delay: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with serve(FakeGitHub(token="ghp_test")) as fake:
        yield fake


def make_config(fake: FakeGitHub, flows: dict[str, dict[str, Any]], *, max_deletes: int = 5,
                extra_connectors: dict[str, Connector] | None = None) -> Config:
    def flow(name: str, spec: dict[str, Any]) -> Flow:
        return Flow(name, Trigger(spec.get("connector", "github"), "webhook-trigger", "gh",
                                  parameters={"owner": "o", "repo": spec.get("repo", "r")},
                                  body={"events": spec.get("events", ["push"])}))

    return Config(
        directory=Path("."),
        settings=Settings(public_url=PUBLIC, reconcile=ReconcilePolicy(max_deletes=max_deletes)),
        connectors={"github": github_connector(), **(extra_connectors or {})},
        connections={"gh": Connection("gh", "github", {"token": "ghp_test"},
                                      base_url=fake.base_url)},
        flows={n: flow(n, s) for n, s in flows.items()},
    )


def store_of(rows: SubscriptionStore) -> Store:
    """The store interface on the file `rows` reads (the tests read it back directly)."""
    path = Path(rows.conn.execute("PRAGMA database_list").fetchone()[2])
    return stores.open(path.parent, role="cli")


def reconcile(config: Config, store: SubscriptionStore, *, timeout: float = 5.0,
              allow_deletes: int | None = None, plan_only: bool = False,
              retries: int = 2) -> Any:
    async def go() -> Any:
        real = store_of(store)
        try:
            async with Upstream(timeout=timeout, sleep=_no_sleep,
                                retry=RetryPolicy(retries=retries, base_delay=0.001)) as up:
                r = Reconciler(config, real.subscriptions, up, SECRET)
                if plan_only:
                    return await r.plan(allow_deletes=allow_deletes)
                return await r.reconcile(allow_deletes=allow_deletes)
        finally:
            await real.aclose()

    return asyncio.run(go())


@pytest.fixture
def store(tmp_path: Path) -> SubscriptionStore:
    return SubscriptionStore(open_db(tmp_path))


def actions(report: Report) -> list[tuple[str, str, str]]:
    return sorted((o.flow, o.action, o.result) for o in report.outcomes)


def test_create_keep_delete_replace(gh: FakeGitHub, store: SubscriptionStore) -> None:
    flows = {"a": {}, "b": {"events": ["issues"]}, "c": {"repo": "other"}}
    report = reconcile(make_config(gh, flows), store)
    assert actions(report) == [("a", "create", "ok"), ("b", "create", "ok"), ("c", "create", "ok")]
    assert len(gh.hooks) == 3
    rows = {r.flow: r for r in store.all()}
    for hook in gh.hooks.values():
        url = hook.config["url"]
        sub_id = url.split("/")[-2]
        row = store.get(sub_id)
        assert row is not None and row.status == "active"
        assert hook.config["secret"] == row.secret == tokens.signing_secret(SECRET, sub_id)
        assert row.location == f"{gh.base_url}/repos/{hook.owner}/{hook.repo}/hooks/{hook.id}"
    assert gh.hooks_of("o", "r")[1].events == ["issues"]

    gh.reset_counters()
    report = reconcile(make_config(gh, flows), store)
    assert report.outcomes == [] and gh.write_requests == 0
    assert gh.list_requests == 2  # one per repository

    del flows["c"]
    report = reconcile(make_config(gh, flows), store)
    assert actions(report) == [("c", "delete", "ok")]
    assert gh.hooks_of("o", "other") == [] and len(gh.hooks) == 2
    assert rows["c"].id not in {r.id for r in store.all()}

    flows["a"] = {"events": ["release"]}
    gh.reset_counters()
    report = reconcile(make_config(gh, flows), store)
    assert actions(report) == [("a", "replace", "ok")]
    assert gh.write_requests == 2  # create the new, then delete the old
    assert sorted(h.events for h in gh.hooks.values()) == [["issues"], ["release"]]
    assert len(store.all()) == 2


def test_vanished_hook_is_recreated_and_others_hooks_untouched(
        gh: FakeGitHub, store: SubscriptionStore) -> None:
    foreign = gh.add_hook("o", "r", "https://ci.example.com/hook")
    reconcile(make_config(gh, {"a": {}}), store)
    ours = next(h for h in gh.hooks.values() if h.id != foreign.id)
    del gh.hooks[ours.id]  # someone deleted it in GitHub's UI
    p = reconcile(make_config(gh, {"a": {}}), store, plan_only=True)
    assert [(i.action, i.reason) for i in p.changes] == [
        ("create", "vanished upstream (deleted outside hookd)")]
    reconcile(make_config(gh, {"a": {}}), store)
    assert len(gh.hooks) == 2 and foreign.id in gh.hooks
    reconcile(make_config(gh, {}), store)
    assert list(gh.hooks) == [foreign.id]


def test_unrecorded_hook_with_our_url_is_adopted_or_deleted(
        gh: FakeGitHub, store: SubscriptionStore) -> None:
    config = make_config(gh, {"a": {}, "b": {}})
    reconcile(config, store)
    for row in store.all():
        store.remove(row.id)  # as if the state directory had been lost (but not the secret)
    gh.reset_counters()
    report = reconcile(make_config(gh, {"a": {}}), store)
    assert actions(report) == [("", "delete", "ok"), ("a", "adopt", "ok")]
    assert gh.write_requests == 1 and len(gh.hooks) == 1
    assert [r.status for r in store.all()] == ["active"]


def test_plan_writes_nothing(gh: FakeGitHub, store: SubscriptionStore) -> None:
    p = reconcile(make_config(gh, {"a": {}}), store, plan_only=True)
    assert [i.action for i in p.changes] == ["create"]
    assert gh.write_requests == 0 and store.all() == []


def test_max_deletes_blocks_a_mass_delete(gh: FakeGitHub, store: SubscriptionStore) -> None:
    flows = {f"f{n}": {} for n in range(8)}
    reconcile(make_config(gh, flows, max_deletes=3), store)
    report = reconcile(make_config(gh, {}, max_deletes=3), store)
    results = [o.result for o in report.outcomes]
    assert results.count("ok") == 3 and results.count("blocked") == 5
    assert len(gh.hooks) == 5
    report = reconcile(make_config(gh, {}, max_deletes=3), store, allow_deletes=10)
    assert len(gh.hooks) == 0 and store.all() == []


def test_permanent_failure_is_recorded_and_reported(gh: FakeGitHub, store: SubscriptionStore) -> None:
    config = make_config(gh, {"a": {}})
    bad = replace(config, connections={"gh": replace(config.connections["gh"],
                                                     parameters={"token": "wrong"})})
    report = reconcile(bad, store)
    assert [o.result for o in report.outcomes] == ["failed"]
    assert "bad credentials" in report.outcomes[0].detail
    (row,) = store.all()
    assert row.status == "failed" and "401" in (row.last_error or "")
    report = reconcile(config, store)  # credentials fixed: retried and created
    assert [o.result for o in report.outcomes] == ["ok"] and store.all()[0].status == "active"


def test_a_failed_subscription_shows_failing_while_its_retry_runs(
        gh: FakeGitHub, store: SubscriptionStore, tmp_path: Path) -> None:
    """`hookd status` must not call a failing subscription healthy for the length of the
    pass that retries it: the retry's intent row keeps the last error ("retrying")."""
    config = make_config(gh, {"a": {}})
    bad = replace(config, connections={"gh": replace(config.connections["gh"],
                                                     parameters={"token": "wrong"})})
    reconcile(bad, store)
    assert store.all()[0].status == "failed"
    seen: list[tuple[str, str | None]] = []
    stop = threading.Event()

    def watch() -> None:  # as `hookd status` would, from another connection
        rows = SubscriptionStore(open_db(tmp_path))
        while not stop.is_set():
            (row,) = rows.all()
            if row.status != "failed":
                seen.append((row.status, row.last_error))
            if row.status == "active":
                return
            time.sleep(0.005)  # polling the file for the pass's writes

    gh.latency = 0.3  # every upstream answer waits: the retry's intent is visible meanwhile
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        report = reconcile(config, store)
    finally:
        stop.set()
        watcher.join(10)
    assert [o.result for o in report.outcomes] == ["ok"]
    pending = [(status, error) for status, error in seen if status == "pending"]
    assert pending, f"the pass's pending row was never seen: {seen}"
    assert all(shown_state(status, error) == "retrying" and "401" in (error or "")
               for status, error in pending), pending
    (row,) = store.all()
    assert row.status == "active" and row.last_error is None


def test_create_that_timed_out_but_happened_is_adopted_not_duplicated(
        gh: FakeGitHub, store: SubscriptionStore) -> None:
    gh.faults = Faults(slow=1.0, slow_seconds=0.5)  # every write is applied, then answers late
    report = reconcile(make_config(gh, {"a": {}}), store, timeout=0.2)
    gh.faults = Faults()
    # First attempt timed out after GitHub created the hook; the retry got 422 and the
    # reconciler found the hook by listing.
    assert [o.result for o in report.outcomes] == ["ok"]
    assert len(gh.hooks) == 1 and store.all()[0].status == "active"
    assert store.all()[0].upstream_id == str(next(iter(gh.hooks)))


def test_converges_with_20_percent_faults(gh: FakeGitHub, store: SubscriptionStore) -> None:
    foreign = [gh.add_hook("o", "r", f"https://ci.example.com/{n}") for n in range(3)]
    flows: dict[str, dict[str, Any]] = {
        f"f{n}": {"repo": f"r{n % 3}", "events": [f"e{n}"]} for n in range(12)}
    gh.faults = Faults.mixed(0.2, slow_seconds=0.3, retry_after=0)
    stages = [flows, {k: v for k, v in flows.items() if k not in ("f1", "f2")},
              {**flows, "f0": {"repo": "r0", "events": ["changed"]}}]
    for wanted in stages:
        config = make_config(gh, wanted, max_deletes=20)
        for _ in range(10):
            # No retries within a pass: failures must be repaired by the next passes.
            reconcile(config, store, timeout=0.2, retries=0)
            gh.faults, saved = Faults(), gh.faults
            pending = reconcile(config, store, plan_only=True)
            gh.faults = saved
            if not pending.has_changes:
                break
        gh.faults, saved = Faults(), gh.faults
        final = reconcile(config, store, plan_only=True)
        gh.faults = saved
        assert not final.has_changes, [(i.action, i.reason) for i in final.changes]
        urls = sorted(h.config["url"] for h in gh.hooks.values() if h not in foreign)
        assert len(urls) == len(set(urls)) == len(wanted)  # no duplicates, no orphans
        assert {r.flow for r in store.all()} == set(wanted)
        assert all(r.status == "active" for r in store.all())
        assert all(h.id in gh.hooks for h in foreign)  # nothing of another owner touched


def test_connector_that_cannot_delete_is_reported_unmanageable(
        gh: FakeGitHub, store: SubscriptionStore) -> None:
    # A connector whose create answers without Location and declares no delete operation.
    base = github_connector("nodelete")
    blind = replace(base, operations={"webhook-trigger": base.operations["webhook-trigger"]},
                    webhooks={"webhook-trigger": WebhookTrigger(
                        "webhook-trigger", ("body", "config", "url"),
                        delete=DeleteStrategy("none"))})
    config = make_config(gh, {"a": {"connector": "nodelete"}}, extra_connectors={"nodelete": blind})
    reconcile(config, store)
    store.set(store.all()[0].id, location=None)  # as if the upstream sent no Location
    report = reconcile(replace(config, flows={}), store)
    assert [(o.result, o.detail[:36]) for o in report.outcomes] == [
        ("unmanageable", "unmanageable: cannot delete (no Loca")]
    assert "connector 'nodelete' declares no delete operation" in report.outcomes[0].detail
    assert "hookd subscriptions forget" in report.outcomes[0].detail
    assert store.all()[0].status == "orphaned"


def test_relative_location_is_resolved_against_the_request(store: SubscriptionStore) -> None:
    import httpx

    def handler(r: httpx.Request) -> httpx.Response:
        if r.method == "POST":
            return httpx.Response(201, json={"id": 5}, headers={"Location": "/api/subs/5"})
        return httpx.Response(204)

    op = Operation("sub", "POST", "/v1/subscriptions")
    conn = Connector("rel", host="svc.example", operations={"sub": op},
                     webhooks={"sub": WebhookTrigger("sub", ("body", "url"))})
    config = Config(Path("."), Settings(public_url=PUBLIC), {"rel": conn}, {},
                    {"x": Flow("x", Trigger("rel", "sub"))})

    async def go() -> None:
        real = store_of(store)
        async with Upstream(httpx.MockTransport(handler)) as up:
            await Reconciler(config, real.subscriptions, up, SECRET).reconcile()
        await real.aclose()

    asyncio.run(go())
    assert store.all()[0].location == "https://svc.example/api/subs/5"
    assert store.all()[0].upstream_id == "5"


# ----------------------------------------------------------------------------- corpus connectors

CORPUS = [
    # (corpus directory, what deleting it does); shapes noted for the reader
    ("_flow-docs-github-sample", "ok"),   # nested body.config.url, child-path delete, bearer
    ("Alvao", "ok"),                      # 201 Location, basic auth, basePath
    ("Microsoft Bookings", "ok"),         # body.webhook.notification_url, sibling delete, id field webhookId
    ("Calendly", "ok"),                   # apiKey in Authorization header, child delete
    ("WooCommerce", "ok"),                # basic auth, deep basePath
    ("Oodrive Sign", "ok"),               # body.endpoint.url, sibling delete, header params
    ("FORCAM FORCE Bridge", "ok"),        # 201 Location, apiKey header
    ("Kanbanize", "ok"),                  # apiKey, required header parameters
    ("WorkSpan", "ok"),                   # body.webhook_settings.callback_url
    ("Entersoft", "ok"),                  # Location header, oauth2
    ("Survey123", "ok"),                  # delete path parameter renamed (surveyId → surveyItemId)
    ("TrueDialog SMS", "ok"),             # renamed by case (AccountId → accountId)
    ("Cloud BOT", "ok"),                  # path parameters needed again for the delete
    ("365Training", "unmanageable"),      # no Location, no delete operation
    ("CyberProof", "unmanageable"),       # delete needs a parameter hookd never had
]


def _trigger_params(connector: Connector, op_id: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for p in connector.operations[op_id].parameters:
        if p.location == "body" or not p.required:
            continue
        if p.location == "header":
            params[p.name] = "application/json"
        else:
            params[p.name] = f"v-{p.name}"
    return params


class _Switch:
    """One server for all corpus cases (starting uvicorn per case costs more than the case)."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def spec_server() -> Iterator[tuple[_Switch, str]]:
    from tests.fakes.github import serve_app

    switch = _Switch()
    with serve_app(switch) as base:
        yield switch, base


DATA = Path(__file__).resolve().parent / "data"
# Copies that run without ../shared (tests/data/connectors is the connector loader's).
LOCAL = [
    (DATA / "connectors" / "_flow-docs-github-sample", "ok"),
    (DATA / "connectors" / "Microsoft Bookings", "ok"),
    (DATA / "reconcile" / "connectors" / "Survey123", "ok"),
]


@pytest.mark.parametrize("path, on_delete", LOCAL, ids=[p.name for p, _ in LOCAL])
def test_copied_connector_lifecycle(tmp_path: Path, path: Path, on_delete: str,
                                    spec_server: tuple[_Switch, str]) -> None:
    _lifecycle(path, on_delete, tmp_path, spec_server)


@pytest.mark.parametrize("name, on_delete", CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus_connector_lifecycle(shared_dir: Path, tmp_path: Path, name: str,
                                    on_delete: str, spec_server: tuple[_Switch, str]) -> None:
    _lifecycle(shared_dir / "corpus" / "powerplatform" / name, on_delete, tmp_path, spec_server)


def _lifecycle(path: Path, on_delete: str, tmp_path: Path,
               spec_server: tuple[_Switch, str]) -> None:
    """Create through the spec fake, a no-op pass, then delete (or report unmanageable)."""
    from hookd.connectors import loader as openapi
    from tests.fakes.specfake import CREDENTIALS, SpecFake

    name = path.name
    connector, _ = openapi.load_connector(path)
    assert connector is not None and connector.webhooks
    op_id = next(iter(connector.webhooks))
    fake = SpecFake(connector, relative_location=len(name) % 2 == 0)
    store = SubscriptionStore(open_db(tmp_path))
    switch, base = spec_server
    switch.app = fake.app()
    fake.base_url = base
    conn = Connection("c", connector.name, dict(CREDENTIALS),
                      base_url=base + "/" + connector.base_path.strip("/"))
    flow = Flow("f", Trigger(connector.name, op_id, "c",
                             parameters=_trigger_params(connector, op_id)))
    config = Config(Path("."), Settings(public_url=PUBLIC), {connector.name: connector},
                    {"c": conn}, {"f": flow})

    report = reconcile(config, store)
    assert [(o.action, o.result) for o in report.outcomes] == [("create", "ok")], report
    (sub,) = fake.subscriptions.values()
    (row,) = store.all()
    assert sub.callback_url == tokens.callback_url(
        PUBLIC, row.id, tokens.callback_token(SECRET, row.id))
    assert row.upstream_id == sub.id or (row.location or "").endswith("/" + sub.id)

    assert reconcile(config, store).outcomes == []  # nothing to do, nothing sent
    assert [m for m, *_ in fake.log] == ["POST"]

    report = reconcile(replace(config, flows={}), store)
    assert [o.result for o in report.outcomes] == [on_delete], report.outcomes
    if on_delete == "ok":
        assert fake.subscriptions == {} and store.all() == []
    else:
        assert "unmanageable: cannot delete" in report.outcomes[0].detail
        assert store.all()[0].status == "orphaned"


def test_failed_replace_keeps_the_old_hook_delivering(gh: FakeGitHub, store: SubscriptionStore) -> None:
    reconcile(make_config(gh, {"a": {}}), store)
    (old,) = store.all()
    gh.faults = Faults(error_500=1.0)
    report = reconcile(make_config(gh, {"a": {"events": ["issues"]}}), store, retries=0)
    gh.faults = Faults()
    assert [(o.action, o.result) for o in report.outcomes] == [("replace", "failed")]
    assert store.get(old.id).status == "active"  # type: ignore[union-attr]
    assert len(gh.hooks) == 1
    report = reconcile(make_config(gh, {"a": {"events": ["issues"]}}), store)
    assert [(o.action, o.result) for o in report.outcomes] == [("replace", "ok")]
    assert [h.events for h in gh.hooks.values()] == [["issues"]]


def test_unknown_repository_is_explained_and_its_scope_reported(store: SubscriptionStore) -> None:
    with serve(FakeGitHub(token="ghp_test", repos={("o", "r")})) as fake:
        config = make_config(fake, {"a": {}, "b": {"repo": "private"}})
        p = reconcile(config, store, plan_only=True)
        assert any("cannot list hooks in github (connection gh) owner=o repo=private" in w
                   for w in p.warnings)
        report = reconcile(config, store)
        results = {o.flow: (o.result, o.detail) for o in report.outcomes}
        assert results["a"][0] == "ok"
        assert results["b"][0] == "failed"
        assert "the token lacks permission for this repository or admin:repo_hook scope" \
            in results["b"][1]
