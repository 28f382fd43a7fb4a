"""The admin listener (healthz, readyz, metrics, mounted routes) and the metrics format."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hookd import store as stores
from hookd.admin.app import create_admin_app
from hookd.callbacks.verify import sign
from hookd.ingest.app import AppState, create_app
from hookd.subscriptions import tokens
from hookd.telemetry.metrics import Counter, Histogram, Metrics, render
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
    text = r.text
    sub = target.subscription_id
    assert f'hookd_deliveries_total{{subscription="{sub}",flow="push",outcome="accepted"}} 1' in text
    assert f'hookd_deliveries_total{{subscription="{sub}",flow="push",outcome="unauthorized"}} 1' in text
    assert 'hookd_deliveries_total{subscription="",flow="",outcome="not_found"} 2' in text
    assert f'hookd_verification_failures_total{{subscription="{sub}",flow="push"}} 1' in text
    assert "hookd_inbox_depth 1" in text
    assert 'hookd_reconcile_results_total{action="create",result="ok"} 1' in text
    assert re.search(r'hookd_request_duration_seconds_bucket\{outcome="accepted",le="\+Inf"\} 1', text)
    assert "hookd_inbox_commits_total 1" in text
    wal = re.search(r"^hookd_store_wal_bytes (\d+)$", text, re.M)
    assert wal and int(wal.group(1)) > len(PUSH)  # the delivery's frames are in the WAL


def test_prometheus_text_format() -> None:
    c = Counter("x_total", "Things.", ("name",))
    c.inc('a"b\\c\nd')
    c.inc("plain", by=2.5)
    h = Histogram("lat_seconds", "Latency.", buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 5.0):
        h.observe(v)
    assert render([c, h]).splitlines() == [
        "# HELP x_total Things.",
        "# TYPE x_total counter",
        'x_total{name="a\\"b\\\\c\\nd"} 1',
        'x_total{name="plain"} 2.5',
        "# HELP lat_seconds Latency.",
        "# TYPE lat_seconds histogram",
        'lat_seconds_bucket{le="0.1"} 1',
        'lat_seconds_bucket{le="1"} 2',
        'lat_seconds_bucket{le="+Inf"} 3',
        "lat_seconds_sum 5.55",
        "lat_seconds_count 3",
    ]


def test_a_broken_gauge_does_not_break_metrics() -> None:
    m = Metrics()

    def broken() -> float:
        raise RuntimeError("store gone")

    m.inbox_depth.read = broken
    assert "# TYPE hookd_inbox_depth gauge" in m.render()
