"""The status page over HTTP (no browser): sign-in, CSRF, masking, pagination, replay, live.

A real uvicorn server on 127.0.0.1 serves the page routes over a real store of each
backend (a SQLite file; a fresh PostgreSQL database when the test server is there,
tests/pgserver.py), filled through the store interface; a "worker" creates the new run
when the page pokes it after a replay, as `hookd.runs.worker` does.
The browser half (JavaScript, live updates, screenshots; a real `hookd run` on both
backends) is tests/test_pages_browser.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx
import pytest
from starlette.applications import Starlette

from hookd import store as stores
from hookd.admin.pages import chart, models, queries, reads, views
from hookd.admin.pages.session import COOKIE
from hookd.config.loader import load_config
from hookd.config.model import Settings, StoreSetting
from hookd.store.interface import Store
from hookd.store.records import NewDelivery
from hookd.telemetry import logs
from tests import pgserver
from tests.fakes.github import serve_app
from tests.test_store_contract import with_store

TOKEN = "admin.token-for-tests-0123456789"
LEAKY = "sekrit-value-registered-with-the-logs"
T = TypeVar("T")

html5lib = pytest.importorskip("html5lib", reason="html5lib (test extra) validates the pages")


@dataclass
class Served:
    url: str
    settings: Settings
    delivery_ids: list[str]
    run_ids: list[str]
    pokes: list[float]
    worker_ready: threading.Event

    def client(self, *, signed_in: bool = True) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=10, follow_redirects=False)
        if signed_in:
            answer = client.post("/signin", data={"token": TOKEN, "next": "/"})
            assert answer.status_code == 303, answer.text
        return client

    def store(self, go: Callable[[Store], Awaitable[T]]) -> T:
        return with_store(self.settings, go)


async def fill(store: Store, clock: list[float], n: int,
               now: float) -> tuple[list[str], list[str]]:
    """`n` deliveries of flow `a` (every 5th run failed), newest last; one run each."""
    dids, rids = [], []
    for i in range(n):
        at = now - (n - i) * 60
        clock[0] = at + 1
        body = {"n": i, "repository": {"full_name": "acme/app"}, "note": LEAKY}
        (did,) = (await store.inbox.record([NewDelivery(
            "sub-a", "a", at,
            {"content-type": "application/json", "x-hub-signature-256": "sha256=deadbeef",
             "authorization": "Bearer upstream-credential", "x-github-event": "push"},
            json.dumps(body).encode(), event="push")])).ids
        run = await store.runs.create(did, "a", status="running")
        ok = i % 5 != 0
        await store.runs.step_started(run.id, "fetch", 0, "http", 2,
                                      {"url": "https://example.net"})
        await store.runs.step_finished(run.id, "fetch", "succeeded" if ok else "failed",
                                       output={"status": 200 if ok else 500},
                                       error=None if ok else "HTTP 500 from example.net")
        await store.runs.finish(run.id, "succeeded" if ok else "failed",
                                None if ok else "step fetch: 500", delivery_id=did)
        dids.append(did)
        rids.append(run.id)
    return dids, rids


async def work(store: Store) -> None:
    """What the worker does when poked: claim the requeued deliveries, run each."""
    for d in await store.deliveries.claim(10, lease=30):
        run = await store.runs.create(d.id, d.flow, status="running")
        await store.runs.finish(run.id, "succeeded", delivery_id=d.id)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("pages")
    (root / "flows").mkdir()
    (root / "hookd.yaml").write_text(
        f"public_url: https://hooks.example.net\nstate_dir: {root / 'state'}\n")
    (root / "flows" / "a.yaml").write_text(
        "name: a\ntrigger: {connector: http}\nsteps:\n  - id: fetch\n    log: {message: hi}\n")
    config, problems = load_config(root)
    assert config is not None, problems
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            server = request.getfixturevalue("postgres_server")
            url = pgserver.create_database(server)
            stack.callback(pgserver.drop_database, server, url)
            config = dataclasses.replace(config, settings=dataclasses.replace(
                config.settings, store=StoreSetting("postgresql", url)))
        settings = config.settings
        now = time.time()
        clock = [now]
        dids, rids = with_store(settings, lambda s: fill(s, clock, 60, now),
                                clock=lambda: clock[0])
        logs.register_secret(LEAKY)
        pokes: list[float] = []
        worker_ready = threading.Event()
        worker_ready.set()

        def poke() -> None:
            pokes.append(time.time())

            def run() -> None:
                worker_ready.wait(30)
                with_store(settings, work)

            threading.Thread(target=run).start()

        store = stores.open(settings)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await store.start()  # on the server's event loop, which uses it
            yield
            await store.aclose()

        site = views.Site(
            config=lambda: config,
            store=reads.Reads.of(store),
            server_secret=b"s" * 32, admin_token=lambda: TOKEN,
            daemon=lambda: models.DaemonView(
                "0.1.0", now - 3600, "rev1234",
                models.ReloadView(now - 60, "watch", False, "rev5678",
                                  ("flows/b.yaml:3:5: unknown key 'stpes'",)),
                models.ReconcileView(now - 30, "scheduled", True, "1 keep", next_at=now + 30)),
            token_ok=lambda presented: presented == TOKEN, poke=poke)
        app = Starlette(routes=views.routes(site), lifespan=lifespan)
        url = stack.enter_context(serve_app(app, lifespan="on"))
        yield Served(url, settings, dids, rids, pokes, worker_ready)


def new_run_of(client: httpx.Client, location: str) -> str:
    """Where a replay's answer leads: the new run's id (its page at once, or the delivery's
    page until the worker has created the run, which it then redirects to)."""
    deadline = time.monotonic() + 20
    while not location.startswith("/runs/"):
        assert location.startswith("/deliveries/"), location
        assert time.monotonic() < deadline, "the new run never came"
        answer = client.get(location)
        if answer.status_code == 303:
            location = answer.headers["location"]
        else:
            time.sleep(0.1)
    return location.removeprefix("/runs/")


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
    assert served.store(lambda s: s.deliveries.get(served.delivery_ids[1])).status == "done"  # type: ignore[union-attr]


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
    assert answer.status_code == 303 and served.pokes
    new_run = new_run_of(client, answer.headers["location"])
    assert new_run != run_id
    page = client.get(f"/runs/{new_run}").text
    assert "<dt>Attempt</dt><dd>2</dd>" in page
    assert run_id in page  # the earlier attempt is listed


def test_live_stream_sends_new_deliveries_as_rows(served: Served) -> None:
    client = served.client()
    after = "~".join(served.store(lambda s: s.activity.cursors()))

    async def record(store: Store) -> str:
        return (await store.inbox.record([NewDelivery(
            "sub-a", "a", time.time(), {}, b'{"live": true}', event="ping")])).ids[0]

    new_id = served.store(record)
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

    async def record(store: Store) -> str:
        return (await store.inbox.record([NewDelivery(
            "sub-a", "a", time.time(), {}, big, event="push")])).ids[0]

    big_id = served.store(record)
    client = served.client()
    page = client.get(f"/deliveries/{big_id}")
    assert "Only the beginning is shown." in page.text
    assert len(page.text) < queries.BODY_CAP * 1.5 < len(big)
    assert client.get(f"/deliveries/{big_id}/body").content == big


def test_replay_with_a_busy_worker_answers_at_once_and_moves_on_to_the_new_run(
        served: Served) -> None:
    """The worker takes long to pick the replay up (here: until the test lets it): the
    button answers at once with the delivery's page, which says the replay is queued and
    goes on to the new run as soon as it exists (live.js follows the stream; a reload
    of the same address redirects)."""
    client = served.client()
    delivery_id, run_id = served.delivery_ids[2], served.run_ids[2]
    html = client.get(f"/runs/{run_id}").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert csrf is not None
    served.worker_ready.clear()
    try:
        started = time.monotonic()
        answer = client.post(f"/runs/{run_id}/replay", data={"csrf": csrf.group(1)})
        assert time.monotonic() - started < 2  # no waiting for the worker
        assert answer.status_code == 303
        waiting_at = answer.headers["location"]
        assert waiting_at == f"/deliveries/{delivery_id}?replayed=1"
        waiting = client.get(waiting_at)
        assert waiting.status_code == 200 and "Replay queued" in waiting.text
        assert f'data-replay-wait="{delivery_id}"' in waiting.text
    finally:
        served.worker_ready.set()
    new_run = new_run_of(client, waiting_at)
    assert new_run != run_id
    assert "<dt>Attempt</dt><dd>2</dd>" in client.get(f"/runs/{new_run}").text
