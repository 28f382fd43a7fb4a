"""The status page in a real browser: headless Chromium (Debian's package) driven by
Playwright, against a real `hookd run` registered with the fake GitHub, on each store
backend (SQLite; PostgreSQL in a fresh database when the test server is there,
tests/pgserver.py: skipped without it, failing under ``CI=true``).

One hookd process and one browser serve every test of the module for a backend
(module-scoped fixtures), so the whole file takes a few seconds a backend. The tests skip, saying why, where
chromium or Playwright is missing, and fail instead under ``CI=true`` (.ci/run installs
both). A screenshot of each page lands in the module's temporary directory
(``…/browser0/shots/*.png``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from hookd.config.model import Settings, StoreSetting
from hookd.store.records import Run
from tests import pgserver
from tests.fakes.github import FakeGitHub, Hook, serve, serve_app
from tests.fakes.sink import Sink
from tests.pipeline_util import push_payload
from tests.test_daemon import free_port, wait_until
from tests.test_store_contract import with_store

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
GITHUB_TOKEN = "t0ken-for-browser-tests"


def _need_browser() -> Any:
    """Playwright's sync API, or skip (fail under CI) naming what is missing."""
    problem = ""
    try:
        from playwright import sync_api
    except ImportError:
        problem = "Playwright for Python is not installed (pip install -e '.[test]')"
    if not problem and not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run under CI: {problem}")
        pytest.skip(problem)
    return sync_api


@dataclass
class Hookd:
    admin: str
    token: str
    github: FakeGitHub
    hook: Hook
    shots: Path
    settings: Settings  # the store hookd runs on (for the tests' own look at it)
    proc: subprocess.Popen[bytes]

    def runs(self) -> list[Run]:
        # In a thread of its own: Playwright's sync API runs an event loop in this one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(with_store, self.settings, lambda s: s.runs.list(limit=1000),
                               role="cli").result(30)

    def shot(self, page: Any, name: str) -> Path:
        path = self.shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def write_config(root: Path, github_url: str, sink_url: str, *,
                 postgres: bool = False) -> tuple[int, int]:
    public, admin = free_port(), free_port()
    (root / "flows").mkdir(parents=True)
    (root / "connections").mkdir()
    (root / "hookd.yaml").write_text(textwrap.dedent(f"""
        public_url: http://127.0.0.1:{public}
        listen:
          public: {{host: 127.0.0.1, port: {public}}}
          admin: {{host: 127.0.0.1, port: {admin}}}
        state_dir: {root / 'state'}
        shutdown_timeout: 5s
    """) + ("store: ${env:HOOKD_DB}\n" if postgres else ""))
    (root / "connections" / "github.yaml").write_text(textwrap.dedent(f"""
        connector: github
        base_url: {github_url}
        parameters: {{token: "${{env:GITHUB_TOKEN}}"}}
    """))
    (root / "flows" / "deploy.yaml").write_text(textwrap.dedent(f"""
        name: deploy
        trigger:
          connector: github
          operation: webhook-trigger
          connection: github
          parameters: {{owner: acme, repo: app}}
        steps:
          - id: prepare
            set:
              repo: "{{{{ trigger.body.repository.full_name }}}}"
          - id: notify
            retry: {{attempts: 3, delay: 0.1s, backoff: fixed}}
            http:
              method: POST
              url: "{sink_url}/notify"
              body: "deploy {{{{ steps.prepare.output.repo }}}}"
    """))
    return public, admin


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hookd(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hookd]:
    tmp = tmp_path_factory.mktemp(f"browser-{request.param}")
    with contextlib.ExitStack() as stack:
        state = tmp / "config" / "state"
        settings = Settings(public_url="https://hooks.example.net", state_dir=state)
        env = {**os.environ, "GITHUB_TOKEN": GITHUB_TOKEN}
        if request.param == "postgresql":
            server = request.getfixturevalue("postgres_server")
            env["HOOKD_DB"] = pgserver.create_database(server)
            stack.callback(pgserver.drop_database, server, env["HOOKD_DB"])
            settings = dataclasses.replace(
                settings, store=StoreSetting("postgresql", env["HOOKD_DB"]))
        github = stack.enter_context(serve(FakeGitHub(token=GITHUB_TOKEN, ping=True)))
        sink = Sink(responses=[503])  # the first notify attempt fails: a retry to show
        stack.callback(sink.close)
        _, admin = write_config(tmp / "config", github.base_url, sink.url,
                                postgres=request.param == "postgresql")
        log = stack.enter_context((tmp / "hookd.log").open("wb"))
        env.pop("NOTIFY_SOCKET", None)
        proc = subprocess.Popen([sys.executable, "-m", "hookd", "run", "--config",
                                 str(tmp / "config")], env=env, stdout=subprocess.DEVNULL,
                                stderr=log)

        def stop() -> None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        stack.callback(stop)
        url = f"http://127.0.0.1:{admin}"
        wait_until(lambda: httpx.get(url + "/readyz", timeout=2).status_code == 200,
                   timeout=20, what="hookd ready")
        (hook,) = wait_until(lambda: github.hooks_of("acme", "app"), timeout=20,
                             what="the hook created upstream")
        token = wait_until(lambda: (state / "admin.token").read_text().strip(),
                           what="the admin token")
        shots = tmp / "shots"
        shots.mkdir()
        yield Hookd(url, token, github, hook, shots, settings, proc)


def test_the_page_is_served_on_the_store_backend(hookd: Hookd) -> None:
    """Without a browser: `hookd run` serves the page on this backend (PostgreSQL's once
    answered 503 there), signed in with the admin token."""
    with httpx.Client(base_url=hookd.admin, timeout=10) as client:
        assert client.get("/").status_code == 303  # to the sign-in form
        signed = client.post("/signin", data={"token": hookd.token, "next": "/"})
        assert signed.status_code == 303
        overview = client.get("/")
        assert overview.status_code == 200 and "Last 24 hours" in overview.text
        assert "deploy" in client.get("/flows").text


@pytest.fixture(scope="module")
def browser(hookd: Hookd) -> Iterator[Any]:
    sync_api = _need_browser()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def signed_in(hookd: Hookd, browser: Any) -> Iterator[Any]:
    """One browser page, signed in through the form as a person would."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and
            "Content Security Policy" in m.text else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status == 404
            and r.url.startswith(hookd.admin) else None)
    page.goto(hookd.admin + "/flows")
    assert page.url.startswith(hookd.admin + "/signin?next=")
    page.get_by_label("Admin token").fill(hookd.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(hookd.admin + "/flows")
    yield page
    assert not errors, errors  # no CSP violation, no script error on any page
    context.close()


def test_a_wrong_token_cannot_sign_in(hookd: Hookd, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(hookd.admin + "/")
    page.get_by_label("Admin token").fill("not-" + hookd.token)
    page.keyboard.press("Enter")
    page.get_by_text("That is not the admin token.").wait_for()
    assert "/signin" in page.url
    assert not context.cookies()
    hookd.shot(page, "signin-refused")
    context.close()


def test_flows_then_a_signed_delivery_appears_live(hookd: Hookd, signed_in: Any) -> None:
    page = signed_in
    row = page.get_by_role("row").filter(has_text="deploy")
    assert "github" in row.inner_text() and "active" in row.inner_text()
    hookd.shot(page, "flows")

    row.get_by_role("link", name="active").click()
    request = page.locator("pre.code").inner_text()
    assert request.startswith(f"POST {hookd.github.base_url}/repos/acme/app/hooks")
    assert '"secret": "***"' in request  # the signing secret, masked
    hookd.shot(page, "subscription")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Deliveries").click()
    page.wait_for_selector("html[data-live-connected]")  # the live stream is open
    before = page.locator("tbody[data-live-kind=delivery] tr").count()
    answer = hookd.github.deliver(hookd.hook.id, "push", push_payload())
    assert answer.status_code == 202
    page.locator("tbody[data-live-kind=delivery] tr").nth(before).wait_for(timeout=10_000)
    newest = page.locator("tbody[data-live-kind=delivery] tr").first
    assert "push" in newest.inner_text() and "deploy" in newest.inner_text()
    hookd.shot(page, "deliveries")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview").click()
    assert page.get_by_role("heading", name="Last 24 hours").is_visible()
    assert (page.locator("svg.chart desc").text_content() or "").startswith(
        f"{before + 1} deliveries")
    hookd.shot(page, "overview")


def test_run_timeline_and_replay_lands_on_the_new_run(hookd: Hookd, signed_in: Any) -> None:
    page = signed_in
    page.goto(hookd.admin + "/deliveries")
    page.locator("tbody[data-live-kind=delivery] tr").filter(has_text="push").first \
        .get_by_role("link").click()
    page.get_by_role("heading", name="Headers").wait_for()
    assert "***" in page.locator("table.kv").inner_text()  # the signature header, masked
    hookd.shot(page, "delivery")

    run_link = page.locator("tbody[data-live-kind=run] a").first
    run_link.wait_for()
    run_link.click()
    # The run may still be retrying its notify step: the page reloads itself when it ends.
    page.get_by_role("button", name="Replay").wait_for(timeout=15_000)
    steps = page.locator("ol.timeline > li")
    assert [s.get_attribute("id") for s in steps.all()] == ["step-prepare", "step-notify"]
    assert "1 retry" in page.locator("#step-notify").inner_text()
    assert "succeeded" in page.locator("h1").inner_text()
    first_run = page.url
    hookd.shot(page, "run")

    page.get_by_role("button", name="Replay").click()
    # At once on the delivery ("Replay queued"), or on the new run if the worker was
    # quicker; the delivery's page moves on to the new run as soon as it exists.
    page.wait_for_url(lambda url: re.search(r"/runs/[0-9a-f]+$", url) is not None
                      and url != first_run)
    # The new run's page reloads itself when the run ends: wait for what it shows.
    page.locator("dl.facts").get_by_text("2", exact=True).wait_for()  # attempt 2
    hookd.shot(page, "replayed-run")


def test_a_cross_site_post_is_refused(hookd: Hookd, signed_in: Any) -> None:
    """A page on another origin submits a replay form: the browser sends the session
    cookie (same site: 127.0.0.1) but marks the request cross-origin, and hookd refuses."""
    page = signed_in
    run_id = hookd.runs()[0].id
    target = f"{hookd.admin}/runs/{run_id}/replay"

    async def evil(request: Request) -> HTMLResponse:
        return HTMLResponse(f'<!DOCTYPE html><form method="post" action="{target}">'
                            '<input name="csrf" value="guess"><button>Win a prize</button></form>')

    runs_before = len(hookd.runs())
    with serve_app(Starlette(routes=[Route("/", evil)])) as other:
        page.goto(other + "/")
        with page.expect_response(target) as answer:
            page.get_by_role("button", name="Win a prize").click()
        assert answer.value.status == 403
        assert "cross-site request refused" in page.content().lower()
        hookd.shot(page, "cross-site-refused")
    assert len(hookd.runs()) == runs_before
