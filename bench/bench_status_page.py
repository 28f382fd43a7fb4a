"""How fast the status page answers with a big history: every page with 100,000 runs.

Seeds a real store with `--runs` runs (default 100,000) spread over the last 24 h,
one delivery and two steps each, 3 % failed, over 8 flows; serves the page routes
(`hookd.admin.pages.views`) with uvicorn on 127.0.0.1, signs in, and prints the median
and p95 answer time of each page over `-n` requests next to ``/healthz`` measured in the
same run (the admin listener's cheapest answer), and the ratio between them. The goal
is < 100 ms per page (issue 15).

    python bench/bench_status_page.py [--runs 100000] [-n 20] [--screenshot docs/x.png]
                                      [--store sqlite|postgresql|both] [--store-url URL]

``--store postgresql`` measures the page on a PostgreSQL store (a fresh database on
``--store-url`` or ``$HOOKD_TEST_POSTGRES_URL``, dropped after the run; ``both``: SQLite,
then PostgreSQL).

``--screenshot PATH`` also saves the overview as the headless chromium renders it (the
README's picture), when Playwright and /usr/bin/chromium are there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import random
import socket
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hookd import store as stores  # noqa: E402
from hookd.admin.pages import models, reads, views  # noqa: E402
from hookd.config.loader import load_config  # noqa: E402
from hookd.config.model import Config, StoreSetting  # noqa: E402
from hookd.store.records import Update  # noqa: E402
from hookd.store.sqlite import db  # noqa: E402
from hookd.store.sqlite.deliveries import (  # noqa: E402
    DeliveryStore,
    NewDelivery,
    new_id,
    prepare,
)
from hookd.store.sqlite.subscriptions import SubscriptionRow, SubscriptionStore  # noqa: E402

TOKEN = "bench-admin.token"
HTTP_FLOWS = ["deploy-site", "notify-chat", "sync-issues", "nightly-report", "label-prs",
              "mirror-tags"]
GITHUB_FLOWS = ["release-notes", "ci-status"]


def write_config(root: Path) -> Path:
    (root / "flows").mkdir(parents=True)
    (root / "connections").mkdir()
    (root / "hookd.yaml").write_text(
        f"public_url: https://hooks.example.net\nstate_dir: {root / 'state'}\n")
    (root / "connections" / "github.yaml").write_text(
        "connector: github\nparameters: {token: \"${env:GITHUB_TOKEN}\"}\n")
    for name in HTTP_FLOWS:
        (root / "flows" / f"{name}.yaml").write_text(
            f"name: {name}\ntrigger: {{connector: http}}\nsteps:\n"
            "  - id: prepare\n    log: {message: go}\n  - id: notify\n    log: {message: done}\n")
    for name in GITHUB_FLOWS:
        (root / "flows" / f"{name}.yaml").write_text(textwrap.dedent(f"""
            name: {name}
            trigger:
              connector: github
              operation: webhook-trigger
              connection: github
              parameters: {{owner: acme, repo: {name}}}
            steps:
              - id: prepare
                log: {{message: go}}
        """))
    return root


Rows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]


def history(runs: int, now: float) -> Rows:
    """`runs` deliveries (prepared rows), runs and their steps over the last 24 h (busier
    in the day), oldest first."""
    rng = random.Random(7)
    flows = HTTP_FLOWS + GITHUB_FLOWS
    times = sorted(now - 86400 * (1 - rng.random() ** 0.7) for _ in range(runs))
    body = json.dumps({"ref": "refs/heads/main", "repository": {"full_name": "acme/app"},
                       "commits": [{"id": "c0ffee", "message": "fix"}]}).encode()
    deliveries: list[tuple[Any, ...]] = []
    run_rows: list[tuple[Any, ...]] = []
    steps: list[tuple[Any, ...]] = []
    for i, at in enumerate(times):
        flow = flows[i % len(flows)]
        failed = rng.random() < 0.03 or (flow == "sync-issues" and i > runs - 40)
        row = prepare(NewDelivery(f"sub-{flow}", flow, at, {"x-github-event": "push"},
                                  body, event="push"), None)
        did, rid = row[0], new_id(at + 0.01)
        deliveries.append(row)
        status = "failed" if failed else "succeeded"
        run_rows.append((rid, did, flow, status, 1, "rev", at, at, at + 0.2,
                         "step notify: HTTP 502 from chat.example.net" if failed else None))
        steps.append((rid, "prepare", 0, "log", "succeeded", 1, at, at + 0.05, "{}", "{}", None))
        steps.append((rid, "notify", 1, "log", status, 2 if failed else 1, at + 0.05,
                      at + 0.2, "{}", "{}", "HTTP 502" if failed else None))
    return deliveries, run_rows, steps


def subscriptions(now: float) -> list[SubscriptionRow]:
    return [
        SubscriptionRow("sub-release-notes", "release-notes", "f1", "github",
                        "webhook-trigger", "github", None, {}, None, None, "x",
                        status="failed", created_at=now - 7200, updated_at=now - 300,
                        last_error="422 Validation Failed: Hook already exists on "
                                   "this repository"),
        SubscriptionRow("sub-ci-status", "ci-status", "f2", "github",
                        "webhook-trigger", "github", None, {},
                        "https://api.github.com/repos/acme/ci-status/hooks/4711", "4711",
                        "x", status="active", verified_at=now - 3500,
                        created_at=now - 86000, updated_at=now - 3500),
    ]


def seed_sqlite(state_dir: Path, rows: Rows, now: float) -> None:
    """In one transaction of raw inserts per table: the stores' one-transaction-per-call
    methods would take minutes for 100,000 rows."""
    deliveries, run_rows, steps = rows
    conn = db.open_db(state_dir)
    with db.immediate_transaction(conn):
        DeliveryStore(conn).insert_prepared(deliveries)
        conn.execute("UPDATE deliveries SET status = 'done'")
        conn.executemany("UPDATE deliveries SET status = 'failed' WHERE id = ?",
                         [(r[1],) for r in run_rows if r[3] == "failed"])
        conn.executemany("INSERT INTO runs (id, delivery_id, flow, status, attempt,"
                         " config_revision, created_at, started_at, finished_at, error)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", run_rows)
        conn.executemany("INSERT INTO run_steps (run_id, step_id, idx, kind, status, attempt,"
                         " started_at, ended_at, input, output, error)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", steps)
    subs = SubscriptionStore(conn)
    for row in subscriptions(now):
        subs.upsert(row)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def seed_postgres(config: Config, url: str, rows: Rows, now: float) -> None:
    """The schema through the store (it migrates), then COPY per table (as fast as the
    server takes rows) and ANALYZE, so the planner knows the tables' sizes."""
    import psycopg

    async def migrate() -> None:
        store = stores.open(config.settings, role="cli")
        await store.start()
        await store.subscriptions.apply_many(
            [Update("upsert", r.id, row=r) for r in subscriptions(now)])
        await store.aclose()

    asyncio.run(migrate())
    deliveries, run_rows, steps = rows
    failed = {r[1] for r in run_rows if r[3] == "failed"}
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY deliveries (id, subscription_id, flow, received_at, headers, body,"
                      " event, dedup_key, item, flags, status, updated_at) FROM STDIN") as copy:
            for d in deliveries:
                copy.write_row((*d, "failed" if d[0] in failed else "done", d[3]))
        with cur.copy("COPY runs (id, delivery_id, flow, status, attempt, config_revision,"
                      " created_at, started_at, finished_at, error) FROM STDIN") as copy:
            for r in run_rows:
                copy.write_row(r)
        with cur.copy("COPY run_steps (run_id, step_id, idx, kind, status, attempt, started_at,"
                      " ended_at, input, output, error) FROM STDIN") as copy:
            for st in steps:
                copy.write_row(st)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE deliveries, runs, run_steps")


@contextlib.contextmanager
def database(kind: str, store_url: str | None) -> Iterator[str | None]:
    """A fresh PostgreSQL database for `kind` ``postgresql`` (dropped after), else None."""
    if kind != "postgresql":
        yield None
        return
    from tests import pgserver

    assert store_url is not None
    url = pgserver.create_database(store_url)
    try:
        yield url
    finally:
        pgserver.drop_database(store_url, url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(app: Starlette) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on",
                                           log_level="critical", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server, thread


def timings(client: httpx.Client, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        answer = client.get(path)
        out.append(time.perf_counter() - start)
        assert answer.status_code == 200, (path, answer.status_code)
    return out


def screenshot(url: str, path: Path) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("no screenshot: Playwright is not installed")
        return
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1240, "height": 900}, device_scale_factor=1)
        page.goto(url + "/signin")
        page.get_by_label("Admin token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(url + "/")
        page.screenshot(path=str(path), full_page=True)
        browser.close()
    print(f"overview screenshot: {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("-n", type=int, default=20, help="requests per page (default 20)")
    parser.add_argument("--screenshot", type=Path, help="save the overview as PNG here")
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="sqlite",
                        help="the store the page reads (both: SQLite, then PostgreSQL)")
    parser.add_argument("--store-url", default=os.environ.get("HOOKD_TEST_POSTGRES_URL"),
                        help="the PostgreSQL server (default $HOOKD_TEST_POSTGRES_URL)")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    if "postgresql" in kinds and not args.store_url:
        parser.error("--store postgresql needs --store-url or $HOOKD_TEST_POSTGRES_URL")
    os.environ.setdefault("GITHUB_TOKEN", "bench-github-token")
    for kind in kinds:
        code = measure(kind, args)
        if code:
            return code
    return 0


def measure(kind: str, args: argparse.Namespace) -> int:
    """Seed a store of `kind`, serve the pages over it, print their times."""
    with tempfile.TemporaryDirectory() as tmp, database(kind, args.store_url) as url:
        root = write_config(Path(tmp) / "config")
        loaded, problems = load_config(root)
        if loaded is None:
            print("\n".join(str(p) for p in problems), file=sys.stderr)
            return 1
        config = loaded
        if url is not None:
            config = dataclasses.replace(config, settings=dataclasses.replace(
                config.settings, store=StoreSetting("postgresql", url)))
        now = time.time()
        start = time.perf_counter()
        rows = history(args.runs, now)
        if url is None:
            seed_sqlite(config.settings.state_dir, rows, now)
        else:
            seed_postgres(config, url, rows, now)
        print(f"{kind}: seeded {args.runs} runs in {time.perf_counter() - start:.1f} s")
        store = stores.open(config.settings)
        daemon = models.DaemonView(
            "0.1.0", now - 3 * 86400, "4f2c9e1",
            models.ReloadView(now - 1800, "watch", True, "4f2c9e1"),
            models.ReconcileView(now - 240, "scheduled", True, "7 keep, 1 create failed",
                                 next_at=now + 360))
        site = views.Site(config=lambda: config,
                          store=reads.Reads.of(store),
                          server_secret=b"b" * 32,
                          admin_token=lambda: TOKEN, daemon=lambda: daemon,
                          token_ok=lambda t: t == TOKEN)

        async def healthz(request: Request) -> Response:
            return JSONResponse({"status": "ok"})

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await store.start()  # on the server's event loop, which uses it
            yield
            await store.aclose()

        url_, server, thread = serve(Starlette(routes=[Route("/healthz", healthz),
                                               *views.routes(site)], lifespan=lifespan))
        client = httpx.Client(base_url=url_, timeout=30)
        client.post("/signin", data={"token": TOKEN})
        deliveries, run_rows, _ = rows
        run_id, delivery_id = run_rows[-1][0], run_rows[-1][1]
        older = sorted(d[0] for d in deliveries)[args.runs // 2]
        pages = ["/healthz", "/", "/flows", "/deliveries", "/deliveries?status=failed",
                 f"/deliveries?flow=sync-issues&before={older}", f"/deliveries/{delivery_id}",
                 f"/runs/{run_id}", "/subscriptions/sub-ci-status"]
        for path in pages:  # warm-up (templates compiled, pages in the store's cache)
            timings(client, path, 1)
        base = statistics.median(timings(client, "/healthz", args.n))
        print(f"{'page (' + kind + ')':58} {'median':>9} {'p95':>9} {'x healthz':>10}")
        worst = 0.0
        for path in pages:
            times = sorted(timings(client, path, args.n))
            median, p95 = statistics.median(times), times[max(0, math.ceil(0.95 * len(times)) - 1)]
            worst = max(worst, p95 if path != "/healthz" else 0.0)
            print(f"{path[:58]:58} {median * 1000:7.1f}ms {p95 * 1000:7.1f}ms "
                  f"{median / base:9.1f}x")
        print(f"{kind}: slowest page p95: {worst * 1000:.1f} ms (goal < 100 ms) "
              f"with {args.runs} runs")
        if args.screenshot:
            screenshot(url_, args.screenshot.resolve())
        server.should_exit = True  # its lifespan closes the store, on its loop
        thread.join(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
