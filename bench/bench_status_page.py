"""How fast the status page answers with a big history: every page with 100,000 runs.

Seeds a real SQLite store with `--runs` runs (default 100,000) spread over the last 24 h,
one delivery and two steps each, 3 % failed, over 8 flows; serves the page routes
(`hookd.admin.pages.views`) with uvicorn on 127.0.0.1, signs in, and prints the median
and p95 answer time of each page over `-n` requests next to ``/healthz`` measured in the
same run (the admin listener's cheapest answer), and the ratio between them. The goal
is < 100 ms per page (issue 15).

    python bench/bench_status_page.py [--runs 100000] [-n 20] [--screenshot docs/x.png]

``--screenshot PATH`` also saves the overview as the headless chromium renders it (the
README's picture), when Playwright and /usr/bin/chromium are there.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

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


def seed(state_dir: Path, runs: int, now: float) -> None:
    """`runs` deliveries and runs over the last 24 h (busier in the day), in one
    transaction of raw inserts per table: the stores' one-transaction-per-call methods
    would take minutes for 100,000 rows."""
    conn = db.open_db(state_dir)
    rng = random.Random(7)
    flows = HTTP_FLOWS + GITHUB_FLOWS
    times = sorted(now - 86400 * (1 - rng.random() ** 0.7) for _ in range(runs))
    body = json.dumps({"ref": "refs/heads/main", "repository": {"full_name": "acme/app"},
                       "commits": [{"id": "c0ffee", "message": "fix"}]}).encode()
    deliveries, run_rows, steps = [], [], []
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
    subs.upsert(SubscriptionRow("sub-release-notes", "release-notes", "f1", "github",
                                "webhook-trigger", "github", None, {}, None, None, "x",
                                status="failed", created_at=now - 7200, updated_at=now - 300,
                                last_error="422 Validation Failed: Hook already exists on "
                                           "this repository"))
    subs.upsert(SubscriptionRow("sub-ci-status", "ci-status", "f2", "github",
                                "webhook-trigger", "github", None, {},
                                "https://api.github.com/repos/acme/ci-status/hooks/4711", "4711",
                                "x", status="active", verified_at=now - 3500,
                                created_at=now - 86000, updated_at=now - 3500))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(app: Starlette) -> tuple[str, uvicorn.Server]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="critical", access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server


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
    args = parser.parse_args()
    os.environ.setdefault("GITHUB_TOKEN", "bench-github-token")

    with tempfile.TemporaryDirectory() as tmp:
        root = write_config(Path(tmp) / "config")
        config, problems = load_config(root)
        if config is None:
            print("\n".join(str(p) for p in problems), file=sys.stderr)
            return 1
        now = time.time()
        start = time.perf_counter()
        seed(config.settings.state_dir, args.runs, now)
        print(f"seeded {args.runs} runs in {time.perf_counter() - start:.1f} s")
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

        url, server = serve(Starlette(routes=[Route("/healthz", healthz),
                                              *views.routes(site)]))
        client = httpx.Client(base_url=url, timeout=30)
        client.post("/signin", data={"token": TOKEN})
        conn = db.connect(config.settings.state_dir / db.DB_NAME)
        run_id = conn.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0]
        delivery_id = conn.execute("SELECT delivery_id FROM runs WHERE id = ?",
                                   (run_id,)).fetchone()[0]
        older = conn.execute("SELECT id FROM deliveries ORDER BY id LIMIT 1 OFFSET ?",
                             (args.runs // 2,)).fetchone()[0]
        conn.close()
        pages = ["/healthz", "/", "/flows", "/deliveries", "/deliveries?status=failed",
                 f"/deliveries?flow=sync-issues&before={older}", f"/deliveries/{delivery_id}",
                 f"/runs/{run_id}", "/subscriptions/sub-ci-status"]
        for path in pages:  # warm-up (templates compiled, pages cached by SQLite)
            timings(client, path, 1)
        base = statistics.median(timings(client, "/healthz", args.n))
        print(f"{'page':58} {'median':>9} {'p95':>9} {'x healthz':>10}")
        worst = 0.0
        for path in pages:
            times = sorted(timings(client, path, args.n))
            median, p95 = statistics.median(times), times[max(0, math.ceil(0.95 * len(times)) - 1)]
            worst = max(worst, p95 if path != "/healthz" else 0.0)
            print(f"{path[:58]:58} {median * 1000:7.1f}ms {p95 * 1000:7.1f}ms "
                  f"{median / base:9.1f}x")
        print(f"slowest page p95: {worst * 1000:.1f} ms (goal < 100 ms) with {args.runs} runs")
        if args.screenshot:
            screenshot(url, args.screenshot.resolve())
        server.should_exit = True
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
