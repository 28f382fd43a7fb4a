"""The status page over HTTP (no browser): sign-in, CSRF, masking, pagination, replay, live.

A real uvicorn server on 127.0.0.1 serves the page routes over a real SQLite store
filled through the store's own classes; a "worker" thread creates the new run when
the page pokes it after a replay, as `hookd.runs.worker` does.
The browser half (JavaScript, live updates, screenshots) is tests/test_pages_browser.py.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from hookd import store as stores
from hookd.admin.pages import chart, models, queries, reads, views
from hookd.admin.pages.session import COOKIE
from hookd.config.loader import load_config
from hookd.store.sqlite import db
from hookd.store.sqlite.activity import ActivityStore
from hookd.store.sqlite.deliveries import DeliveryStore, NewDelivery
from hookd.store.sqlite.runs import RunStore
from hookd.telemetry import logs
from tests.fakes.github import serve_app

TOKEN = "admin.token-for-tests-0123456789"
LEAKY = "sekrit-value-registered-with-the-logs"

html5lib = pytest.importorskip("html5lib", reason="html5lib (test extra) validates the pages")


@dataclass
class Served:
    url: str
    store: Path
    delivery_ids: list[str]
    run_ids: list[str]
    pokes: list[float]

    def client(self, *, signed_in: bool = True) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=10, follow_redirects=False)
        if signed_in:
            answer = client.post("/signin", data={"token": TOKEN, "next": "/"})
            assert answer.status_code == 303, answer.text
        return client


def fill(conn: sqlite3.Connection, n: int, now: float) -> tuple[list[str], list[str]]:
    """`n` deliveries of flow `a` (every 5th run failed), newest last; one run each."""
    deliveries = DeliveryStore(conn)
    dids, rids = [], []
    for i in range(n):
        at = now - (n - i) * 60
        runs = RunStore(conn, clock=lambda at=at: at + 1)
        body = {"n": i, "repository": {"full_name": "acme/app"}, "note": LEAKY}
        (did,) = deliveries.record_many([NewDelivery(
            "sub-a", "a", at,
            {"content-type": "application/json", "x-hub-signature-256": "sha256=deadbeef",
             "authorization": "Bearer upstream-credential", "x-github-event": "push"},
            json.dumps(body).encode(), event="push")])
        run = runs.create(did, "a", status="running")
        ok = i % 5 != 0
        runs.step_started(run.id, "fetch", 0, "http", 2, {"url": "https://example.net"})
        runs.step_finished(run.id, "fetch", "succeeded" if ok else "failed",
                           output={"status": 200 if ok else 500},
                           error=None if ok else "HTTP 500 from example.net")
        runs.finish(run.id, "succeeded" if ok else "failed", None if ok else "step fetch: 500")
        deliveries.finish(did, "done" if ok else "failed")
        dids.append(did)
        rids.append(run.id)
    return dids, rids


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("pages")
    (root / "flows").mkdir()
    (root / "hookd.yaml").write_text(
        f"public_url: https://hooks.example.net\nstate_dir: {root / 'state'}\n")
    (root / "flows" / "a.yaml").write_text(
        "name: a\ntrigger: {connector: http}\nsteps:\n  - id: fetch\n    log: {message: hi}\n")
    config, problems = load_config(root)
    assert config is not None, problems
    conn = db.open_db(config.settings.state_dir, check_same_thread=False)
    store = stores.open(config.settings)
    now = time.time()
    dids, rids = fill(conn, 60, now)
    logs.register_secret(LEAKY)
    pokes: list[float] = []

    def poke() -> None:
        # What the worker does when poked: claim the requeued delivery, create its run.
        def work() -> None:
            own = db.connect(config.settings.state_dir / db.DB_NAME)
            for d in DeliveryStore(own).claim(10):
                run = RunStore(own).create(d.id, d.flow, status="running")
                RunStore(own).finish(run.id, "succeeded")
                DeliveryStore(own).finish(d.id, "done")
            own.close()
        pokes.append(time.time())
        threading.Thread(target=work).start()

    site = views.Site(
        config=lambda: config,
        store=reads.Reads.of(store, store.activity),
        server_secret=b"s" * 32, admin_token=lambda: TOKEN,
        daemon=lambda: models.DaemonView(
            "0.1.0", now - 3600, "rev1234",
            models.ReloadView(now - 60, "watch", False, "rev5678",
                              ("flows/b.yaml:3:5: unknown key 'stpes'",)),
            models.ReconcileView(now - 30, "scheduled", True, "1 keep", next_at=now + 30)),
        token_ok=lambda presented: presented == TOKEN, poke=poke, replay_wait=5.0)
    with serve_app(Starlette(routes=views.routes(site))) as url:
        yield Served(url, config.settings.state_dir / db.DB_NAME, dids, rids, pokes)
    store.close()
    conn.close()


def assert_valid_page(html: str) -> None:
    """Strict HTML5 parsing (any parse error raises) and no inline code (CSP)."""
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    parser.parse(html)
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html), "inline event handler"
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert "style=" not in html, "inline style (CSP style-src 'self')"


# --------------------------------------------------------------------------- sign-in


def test_pages_need_a_session_and_the_right_token(served: Served) -> None:
    anonymous = served.client(signed_in=False)
    answer = anonymous.get("/runs/" + served.run_ids[0])
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=%2Fruns%2F" + served.run_ids[0]
    assert anonymous.get("/live").status_code == 303

    wrong = anonymous.post("/signin", data={"token": TOKEN + "x", "next": "/"})
    assert wrong.status_code == 401
    assert "not the admin token" in wrong.text
    assert COOKIE not in wrong.headers.get("set-cookie", "")

    forged = httpx.Client(base_url=served.url, cookies={COOKIE: "9999999999.abc"})
    assert forged.get("/", follow_redirects=False).status_code == 303

    right = anonymous.post("/signin", data={"token": TOKEN, "next": "//evil.example/x"})
    assert right.status_code == 303 and right.headers["location"] == "/"
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert anonymous.get("/").status_code == 200


def test_sign_in_and_replay_refuse_cross_site_requests(served: Served) -> None:
    anonymous = served.client(signed_in=False)
    refused = anonymous.post("/signin", data={"token": TOKEN},
                             headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and "Cross-site" in refused.text

    client = served.client()
    run_page = client.get("/runs/" + served.run_ids[1]).text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', run_page)
    assert csrf is not None
    target = f"/runs/{served.run_ids[1]}/replay"
    for headers, data in (
        ({"Sec-Fetch-Site": "cross-site"}, {"csrf": csrf.group(1)}),  # another site
        ({}, {}),  # no CSRF token
        ({}, {"csrf": "0" * 64}),  # a wrong one
    ):
        answer = client.post(target, data=data, headers=headers)
        assert answer.status_code == 403, (headers, data)
    # Nothing was queued by the refused requests.
    conn = db.connect(served.store)
    assert DeliveryStore(conn).get(
        RunStore(conn).get(served.run_ids[1]).delivery_id).status == "done"  # type: ignore[union-attr]
    conn.close()


# --------------------------------------------------------------------------- pages


def test_every_page_is_valid_html_without_inline_code(served: Served) -> None:
    client = served.client()
    paths = ["/", "/flows", "/deliveries", "/deliveries?flow=a&status=failed",
             f"/deliveries/{served.delivery_ids[-1]}", f"/runs/{served.run_ids[-1]}",
             "/runs/nope", "/signin"]
    for path in paths:
        answer = client.get(path)
        assert answer.status_code in (200, 303, 404), path
        if answer.status_code == 303:
            continue
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["cache-control"] == "no-store"
        assert_valid_page(answer.text)
    assert client.get("/runs/nope").status_code == 404
    assert client.get("/static/live.js").status_code == 200


def test_overview_shows_counts_problems_reload_errors_and_the_chart(served: Served) -> None:
    html = served.client().get("/").text
    assert "rev1234" in html
    assert "flows/b.yaml:3:5: unknown key &#39;stpes&#39;" in html  # the rejected file
    assert "Last run of <strong>a</strong> failed" not in html  # the newest run succeeded
    assert "1 keep" in html
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg is not None
    # 60 deliveries one a minute: all within 24 h, 12 of them failed.
    assert "60 deliveries and 12 failed runs in the last 24 hours" in svg.group(0)


def test_secrets_are_never_shown(served: Served) -> None:
    client = served.client()
    html = client.get(f"/deliveries/{served.delivery_ids[0]}").text
    assert "sha256=deadbeef" not in html and "upstream-credential" not in html
    assert LEAKY not in html
    assert "x-github-event" in html and "push" in html
    assert "&#34;full_name&#34;: &#34;acme/app&#34;" in html  # formatted JSON
    download = client.get(f"/deliveries/{served.delivery_ids[0]}/body")
    assert download.status_code == 200
    assert "attachment" in download.headers["content-disposition"]
    assert download.json()["n"] == 0  # the body as received


def test_deliveries_page_back_by_keyset_and_filter(served: Served) -> None:
    client = served.client()
    first = client.get("/deliveries").text
    ids = re.findall(r'id="delivery-([0-9a-f]+)"', first)
    assert ids == served.delivery_ids[::-1][:50]
    older = re.search(r'href="(/deliveries\?[^"]*before=[^"]+)" rel="next"', first)
    assert older is not None
    second = client.get(older.group(1).replace("&amp;", "&")).text
    assert re.findall(r'id="delivery-([0-9a-f]+)"', second) == served.delivery_ids[::-1][50:]
    assert 'rel="next"' not in second

    failed = client.get("/deliveries?status=failed").text
    assert len(re.findall(r'id="delivery-', failed)) == 12
    recent = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 10 * 60 - 30))
    assert 8 <= len(re.findall(r'id="delivery-', client.get(f"/deliveries?since={recent}").text)) <= 11
    assert client.get("/deliveries?status=bogus").status_code == 400
    assert client.get("/deliveries?since=yesterday").status_code == 400


def test_run_page_shows_steps_and_replay_lands_on_the_new_run(served: Served) -> None:
    client = served.client()
    run_id = served.run_ids[0]
    html = client.get(f"/runs/{run_id}").text
    assert 'id="step-fetch"' in html and "HTTP 500 from example.net" in html
    assert "1 retry" in html  # the step's second attempt
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert csrf is not None
    answer = client.post(f"/runs/{run_id}/replay", data={"csrf": csrf.group(1)})
    assert answer.status_code == 303
    new_run = answer.headers["location"].removeprefix("/runs/")
    assert new_run != run_id and served.pokes
    page = client.get(f"/runs/{new_run}").text
    assert "<dt>Attempt</dt><dd>2</dd>" in page
    assert run_id in page  # the earlier attempt is listed


def test_live_stream_sends_new_deliveries_as_rows(served: Served) -> None:
    client = served.client()
    conn = db.connect(served.store)
    after = "~".join(ActivityStore(conn).cursors())
    (new_id,) = DeliveryStore(conn).record_many([NewDelivery(
        "sub-a", "a", time.time(), {}, b'{"live": true}', event="ping")])
    conn.close()
    with client.stream("GET", f"/live?after={after}") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line.removeprefix("data:"))
                break
    assert event["id"] == new_id
    assert f'id="delivery-{new_id}"' in event["html"]


def test_chart_scales_each_panel_on_its_own() -> None:
    now = 24 * 3600.0
    buckets = [models.Minute(i * 60.0, 1000 if i == 5 else 0, 1 if i == 6 else 0)
               for i in range(1440)]
    svg = chart.draw(buckets, now=now)
    assert ">1000</text>" in svg  # deliveries axis
    assert re.search(r'class="chart-failed" d="M[\d.]+,186v-40', svg)  # one full-height bar
    assert len(svg) < 4000  # equal minutes merged


def test_a_big_body_is_cut_on_the_page_and_whole_in_the_download(served: Served) -> None:
    big = json.dumps({"items": [{"i": i, "text": "x" * 100} for i in range(2000)]}).encode()
    conn = db.connect(served.store)
    (big_id,) = DeliveryStore(conn).record_many([NewDelivery(
        "sub-a", "a", time.time(), {}, big, event="push")])
    conn.close()
    client = served.client()
    page = client.get(f"/deliveries/{big_id}")
    assert "Only the beginning is shown." in page.text
    assert len(page.text) < queries.BODY_CAP * 1.5 < len(big)
    assert client.get(f"/deliveries/{big_id}/body").content == big


def test_without_the_activity_part_the_page_says_what_it_needs() -> None:
    with serve_app(Starlette(routes=views.unsupported("needs the SQLite store"))) as url:
        answer = httpx.get(url + "/", timeout=5)
    assert answer.status_code == 503 and "needs the SQLite store" in answer.text
    assert_valid_page(answer.text)


def test_after_a_slow_replay_the_delivery_page_moves_on_to_the_new_run(served: Served) -> None:
    """Replay waits a moment for the worker; when the run comes later, the delivery page
    it landed on goes to the run (here: reloaded after the run exists)."""
    client = served.client()
    delivery_id, run_id = served.delivery_ids[2], served.run_ids[2]
    waiting = client.get(f"/deliveries/{delivery_id}?replayed=1")  # attempt 1 is the latest
    assert waiting.status_code == 200 and "Replay queued" in waiting.text
    assert "data-replay-wait" in waiting.text
    moved = client.get(f"/deliveries/{delivery_id}?replayed=0")  # a newer attempt exists
    assert moved.status_code == 303 and moved.headers["location"] == f"/runs/{run_id}"
