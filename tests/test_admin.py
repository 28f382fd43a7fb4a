"""The admin listener (healthz, readyz, metrics, mounted routes) and the metrics format."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hookd import store as stores
from hookd.admin.app import create_admin_app
from hookd.callbacks.verify import sign
from hookd.ingest.app import AppState, create_app
from hookd.subscriptions import tokens
from hookd.telemetry.metrics import Family, Gauge, Metrics
from tests.ingest_launcher import DATA, make_config, subscription

PUSH = (DATA / "github" / "push.0.json").read_bytes()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[AppState]:
    state_dir = tmp_path / "state"
    config = make_config(state_dir)
    store = stores.open(config.settings)
    s = AppState(config, store, tokens.load_or_create_server_secret(state_dir))
    yield s
    store.close()


def _get(app: object, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            return await client.get(path)

    return asyncio.run(go())


def test_healthz_and_readyz(state: AppState) -> None:
    app = create_admin_app(state, routes=[])
    assert _get(app, "/healthz").json() == {"status": "ok"}
    r = _get(app, "/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready" and r.json()["store"] == "ok" and r.json()["config"] == "ok"


def test_a_rejected_config_is_reported_while_still_ready(state: AppState) -> None:
    state.rejected_config = "flows/x.yaml:3:5: error: unknown key 'trigerr'"
    r = _get(create_admin_app(state, routes=[]), "/readyz")
    assert r.status_code == 200
    assert r.json()["config"] == "rejected" and "trigerr" in r.json()["rejected"]


def test_not_ready_while_draining_or_when_the_store_cannot_record(state: AppState) -> None:
    app = create_admin_app(state, routes=[])
    state.draining = True
    assert _get(app, "/readyz").status_code == 503
    state.draining = False
    state.inbox.close()
    r = _get(app, "/readyz")
    assert r.status_code == 503 and r.json()["store"] == "error"


def test_extra_routes_are_mounted_and_the_runs_api_by_default(state: AppState) -> None:
    async def status(request: Request) -> JSONResponse:
        return JSONResponse({"flows": 9})

    app = create_admin_app(state, routes=[Route("/api/status", status)])
    assert _get(app, "/api/status").json() == {"flows": 9}
    default = create_admin_app(state)
    assert _get(default, "/api/runs").status_code != 404  # hookd.admin.api's routes


def test_metrics_count_what_the_public_listener_did(state: AppState) -> None:
    public = create_app(state)
    target = subscription(state.config, state.inbox.db_path.parent, "push")

    async def post(body: bytes, good: bool) -> None:
        headers = {"content-type": "application/json", "x-github-event": "push",
                   **sign(target.verification, target.secret if good else "x", body, now=time.time())}
        transport = httpx.ASGITransport(app=public)
        async with httpx.AsyncClient(transport=transport, base_url="http://public") as client:
            await client.post(target.path, content=body, headers=headers)
            await client.post("/hooks/unknown/token", content=body, headers=headers)

    asyncio.run(post(PUSH, True))
    asyncio.run(post(PUSH, False))
    state.metrics.reconcile_results.inc("create", "ok")
    r = _get(create_admin_app(state, routes=[]), "/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = samples(r.text)
    sub = target.subscription_id
    assert got[("hookd_deliveries_total", (("flow", "push"), ("outcome", "accepted"),
                                           ("subscription", sub)))] == 1
    assert got[("hookd_deliveries_total", (("flow", "push"), ("outcome", "unauthorized"),
                                           ("subscription", sub)))] == 1
    assert got[("hookd_deliveries_total", (("flow", ""), ("outcome", "not_found"),
                                           ("subscription", "")))] == 2
    assert got[("hookd_verification_failures_total", (("flow", "push"),
                                                      ("subscription", sub)))] == 1
    assert got[("hookd_inbox_depth", ())] == 1
    assert got[("hookd_reconcile_results_total", (("action", "create"), ("result", "ok")))] == 1
    assert got[("hookd_request_duration_seconds_bucket", (("le", "+Inf"),
                                                          ("outcome", "accepted")))] == 1
    assert got[("hookd_inbox_commits_total", ())] == 1
    assert got[("hookd_store_wal_bytes", ())] > len(PUSH)  # the delivery's frames are in the WAL


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, parsed by the reference parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# What dashboards and alerts depend on: every family's name, type, label names and HELP.
SERIES = [
    ("hookd_deliveries", "counter", ("subscription", "flow", "outcome"),
     "Callback requests by subscription, flow and outcome (accepted, duplicate, ping, "
     "unauthorized, not_found, gone, disabled, too_large, bad_request, invalid_payload, "
     "unavailable, error)."),
    ("hookd_verification_failures", "counter", ("subscription", "flow"),
     "Callback requests refused because the signature or token did not verify."),
    ("hookd_request_duration_seconds", "histogram", ("outcome",),
     "Time from request received to answer sent on the callback listener."),
    ("hookd_inbox_commits", "counter", (), "Group commits of the inbox writer."),
    ("hookd_inbox_deliveries_recorded", "counter", (), "Deliveries durably recorded."),
    ("hookd_inbox_commit_duration_seconds", "histogram", (),
     "Time of one group commit (write and fsync)."),
    ("hookd_inbox_batch_size", "histogram", (), "Requests written per group commit."),
    ("hookd_inbox_depth", "gauge", (), "Deliveries recorded and not finished (queued or running)."),
    ("hookd_store_wal_bytes", "gauge", (),
     "Size of the SQLite write-ahead log (bounded under steady load by the inbox's checkpoints;"
     " a WAL that keeps growing means they cannot complete)."),
    ("hookd_reconcile_results", "counter", ("action", "result"),
     "Reconcile actions by kind (create, delete, keep, repair, …) and result (ok, error)."),
]


def test_series_names_types_labels_and_help_are_unchanged() -> None:
    m = Metrics()
    m.deliveries.inc("s", "f", "accepted")
    m.verification_failures.inc("s", "f")
    m.request_seconds.observe(0.01, "accepted")
    m.reconcile_results.inc("create", "ok")
    m.inbox_depth.read = m.store_wal_bytes.read = lambda: 1
    families = list(text_string_to_metric_families(m.render()))
    got = []
    for f in families:
        names = {k for s in f.samples for k in s.labels if k != "le"}
        got.append((f.name, f.type, tuple(n for n in dict.fromkeys(
            k for s in f.samples for k in s.labels) if n in names), f.documentation))
    assert [(n, t, set(labels), h) for n, t, labels, h in got] == [
        (n, t, set(labels), h) for n, t, labels, h in SERIES]


def test_values_read_at_scrape_time_and_registries_per_app() -> None:
    a, b = Metrics(), Metrics()
    a.deliveries.inc("s", "f", "accepted", by=2)
    counts = {"applied": 1}
    a.add(Family("hookd_config_reloads_total", "Loads.", "counter", "outcome", lambda: counts))
    a.add(Gauge("hookd_draining", "1 while shutting down.", lambda: 0))
    counts["rejected"] = 3
    got = samples(a.render())
    assert got[("hookd_config_reloads_total", (("outcome", "rejected"),))] == 3
    assert got[("hookd_draining", ())] == 0
    assert a.deliveries.value("s", "f", "accepted") == 2
    assert b.deliveries.value("s", "f", "accepted") == 0  # not the library's global registry
    assert "hookd_config_reloads_total" not in b.render()


def test_a_broken_gauge_does_not_break_metrics() -> None:
    m = Metrics()

    def broken() -> float:
        raise RuntimeError("store gone")

    m.inbox_depth.read = broken
    text = m.render()
    assert "# TYPE hookd_inbox_depth gauge" in text
    assert ("hookd_inbox_depth", ()) not in samples(text)
