"""OAuth 2.0 connections end to end, against a real fake authorization server on 127.0.0.1
(`tests.fakes.oauth_server`): ``hookd connect`` both ways, refresh ahead of expiry and
after a 401, refresh-token rotation, and a revoked refresh token reported by ``hookd
check`` and ``hookd status`` with the command that fixes it. Time is an injected clock."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hookd.config.loader import load_config
from hookd.config.model import Config
from hookd.oauth.tokens import TokenSet
from hookd.store.tokens import FileTokenStore
from hookd.upstream.client import PermanentError, Upstream
from hookd.upstream.oauth import attach
from tests.fakes.github import free_port
from tests.fakes.oauth_server import FakeAuthServer, serve
from tests.test_daemon import wait_until

SECRET_ENV = "API_CLIENT_SECRET"


@pytest.fixture
def fake() -> Iterator[FakeAuthServer]:
    with serve(FakeAuthServer()) as server:
        yield server


def write_config(root: Path, fake: FakeAuthServer, *, flows: dict[str, str] | None = None,
                 public: int = 8080, admin: int = 8081, extra: str = "") -> Path:
    """A config with connector `fakeapi` (apiProperties.json: identityProvider oauth2, the
    fake's URLs in customParameters, as published connectors write them) and connection
    `api`."""
    connector = root / "connectors" / "fakeapi"
    connector.mkdir(parents=True)
    host = fake.base_url.removeprefix("http://")
    (connector / "apiDefinition.swagger.json").write_text(json.dumps({
        "swagger": "2.0", "info": {"title": "Fake API", "version": "1"},
        "host": host, "basePath": "/api", "schemes": ["http"],
        "securityDefinitions": {"oauth2_auth": {
            "type": "oauth2", "flow": "accessCode",
            "authorizationUrl": f"{fake.base_url}/authorize", "tokenUrl": f"{fake.base_url}/token",
            "scopes": {"items.read": "read items"}}},
        "paths": {"/items": {"get": {"operationId": "ListItems", "responses": {"200": {
            "description": "ok"}}}}},
    }))
    (connector / "apiProperties.json").write_text(json.dumps({"properties": {
        "connectionParameters": {"token": {"type": "oauthSetting", "oAuthSettings": {
            "identityProvider": "oauth2", "clientId": "[[DUMMY]]", "scopes": ["items.read"],
            "redirectMode": "Global",
            "customParameters": {
                "authorizationUrl": {"value": f"{fake.base_url}/authorize"},
                "tokenUrl": {"value": f"{fake.base_url}/token"},
                "refreshUrl": {"value": f"{fake.base_url}/token"}}}}}}}))
    (root / "hookd.yaml").write_text(textwrap.dedent(f"""\
        public_url: https://hooks.example.net
        listen:
          public: {{host: 127.0.0.1, port: {public}}}
          admin: {{host: 127.0.0.1, port: {admin}}}
        state_dir: {root / 'state'}
    """))
    (root / "connections").mkdir()
    (root / "connections" / "api.yaml").write_text(textwrap.dedent(f"""\
        connector: fakeapi
        oauth:
          client_id: {fake.client_id}
          client_secret: ${{env:{SECRET_ENV}}}
          {extra}
    """))
    (root / "flows").mkdir()
    for name, text in (flows or {}).items():
        (root / "flows" / f"{name}.yaml").write_text(textwrap.dedent(text))
    return root


def env_with(fake: FakeAuthServer) -> dict[str, str]:
    return {**os.environ, SECRET_ENV: fake.client_secret}


def load(root: Path, fake: FakeAuthServer) -> Config:
    config, problems = load_config(root, env=env_with(fake))
    assert config is not None, [p.format() for p in problems]
    return config


def read_line(proc: subprocess.Popen[str], want: str, timeout: float = 20.0) -> str:
    """The first stdout line of `proc` containing `want` (a reader thread, a deadline)."""
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout

    def pump() -> None:
        for line in iter(stdout.readline, ""):
            lines.put(line)
            if want in line:
                return
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    seen = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line with {want!r} within {timeout}s: {seen}") from None
        if not line:
            raise AssertionError(f"hookd connect ended before printing {want!r}: {seen}")
        seen.append(line)
        if want in line:
            return line.strip()


def connect(root: Path, fake: FakeAuthServer, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hookd", "connect", "api", str(root), *flags],
        env=env_with(fake), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def browse(url: str) -> str:
    """What a browser does with the authorization URL: the address it is redirected to."""
    answer = httpx.get(url, follow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def assert_stored(root: Path, fake: FakeAuthServer) -> TokenSet:
    path = root / "state" / "oauth" / "api.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tokens = FileTokenStore(root / "state").get("api")
    assert tokens is not None
    assert tokens.access_token in fake.access_tokens
    assert tokens.refresh_token in fake.refresh_tokens
    return tokens


# --------------------------------------------------------------------------- hookd connect


def test_connect_with_the_loopback_listener(tmp_path: Path, fake: FakeAuthServer) -> None:
    root = write_config(tmp_path, fake)
    proc = connect(root, fake)
    url = read_line(proc, f"{fake.base_url}/authorize?")
    assert "code_challenge_method=S256" in url and "state=" in url
    redirect = browse(url)
    assert redirect.startswith("http://127.0.0.1:") and "code=" in redirect
    page = httpx.get(redirect, timeout=10)  # the browser lands on hookd's listener
    assert page.status_code == 200 and "close this window" in page.text
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    tokens = assert_stored(root, fake)
    assert fake.grants("authorization_code")[0]["code_verifier"]  # PKCE was used
    for text in (out, err):  # no token on the terminal
        assert tokens.access_token not in text and str(tokens.refresh_token) not in text
        assert fake.client_secret not in text


def test_connect_with_a_pasted_redirect(tmp_path: Path, fake: FakeAuthServer) -> None:
    root = write_config(tmp_path, fake)
    proc = connect(root, fake, "--paste")
    redirect = browse(read_line(proc, f"{fake.base_url}/authorize?"))
    assert redirect.startswith("http://127.0.0.1/callback?")  # nothing listens there
    out, err = proc.communicate(redirect + "\n", timeout=30)
    assert proc.returncode == 0, err
    assert "connected (with a refresh token)" in out
    assert_stored(root, fake)


def test_connect_refuses_a_redirect_of_another_attempt(tmp_path: Path, fake: FakeAuthServer) -> None:
    root = write_config(tmp_path, fake)
    proc = connect(root, fake, "--paste")
    redirect = browse(read_line(proc, f"{fake.base_url}/authorize?"))
    forged = redirect.replace("state=", "state=x")
    _, err = proc.communicate(forged + "\n", timeout=30)
    assert proc.returncode == 1
    assert "state does not match" in err and "nothing was stored" in err
    assert not fake.token_requests  # the code was never used
    assert not (root / "state" / "oauth" / "api.json").exists()


# --------------------------------------------------------------------------- refresh


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def seeded(root: Path, fake: FakeAuthServer, clock: Clock) -> TokenSet:
    """Tokens as `hookd connect` leaves them, issued by the fake now."""
    access, refresh = fake.issue()
    tokens = TokenSet(access, refresh, expires_at=clock.now + fake.expires_in,
                      obtained_at=clock.now)
    FileTokenStore(root / "state").put("api", tokens)
    return tokens


def list_items(config: Config, clock: Clock, fake: FakeAuthServer) -> httpx.Response:
    async def go() -> httpx.Response:
        async with Upstream(clock=clock, env=env_with(fake)) as upstream:
            attach(upstream, FileTokenStore(config.settings.state_dir), clock=clock,
                   env=env_with(fake))
            return await upstream.call(config.connectors["fakeapi"], "ListItems",
                                       config.connections["api"], {}, retry=False)
    return asyncio.run(go())


def test_a_token_is_refreshed_ahead_of_expiry_and_rotated(tmp_path: Path,
                                                          fake: FakeAuthServer) -> None:
    root = write_config(tmp_path, fake)
    config, clock = load(root, fake), Clock()
    first = seeded(root, fake, clock)
    assert list_items(config, clock, fake).json() == [{"id": 1}]
    assert fake.api_requests == [first.access_token] and not fake.token_requests

    clock.now += fake.expires_in - 30  # 30 s left: refreshed before the request leaves
    assert list_items(config, clock, fake).status_code == 200
    assert [g["refresh_token"] for g in fake.grants("refresh_token")] == [first.refresh_token]
    second = assert_stored(root, fake)
    assert fake.api_requests[-1] == second.access_token != first.access_token
    assert second.refresh_token != first.refresh_token  # rotated, and the old one is dead
    assert first.refresh_token not in fake.refresh_tokens
    assert second.expires_at == clock.now + fake.expires_in


def test_a_401_refreshes_once_and_retries(tmp_path: Path, fake: FakeAuthServer) -> None:
    root = write_config(tmp_path, fake)
    config, clock = load(root, fake), Clock()
    first = seeded(root, fake, clock)
    fake.revoke_access(first.access_token)  # revoked early: the clock says it is fine
    assert list_items(config, clock, fake).status_code == 200
    assert fake.api_requests == [first.access_token, assert_stored(root, fake).access_token]
    assert len(fake.grants("refresh_token")) == 1

    fake.refuse_api = True  # every token refused: one refresh, then the 401 stands
    fake.token_requests.clear()
    with pytest.raises(PermanentError) as failure:
        list_items(config, clock, fake)
    assert failure.value.status == 401 and len(fake.grants("refresh_token")) == 1


def test_a_refresh_another_process_stored_is_used_not_repeated(tmp_path: Path,
                                                               fake: FakeAuthServer) -> None:
    """The daemon and its worker process share the token files: when one has refreshed
    (and rotated the refresh token), the other uses the stored tokens instead of
    refreshing with the dead refresh token and calling the connection revoked."""
    root = write_config(tmp_path, fake)
    config, clock = load(root, fake), Clock()
    seeded(root, fake, clock)
    store = FileTokenStore(root / "state")

    async def two_processes() -> None:
        async with Upstream(clock=clock, env=env_with(fake)) as a, \
                Upstream(clock=clock, env=env_with(fake)) as b:
            for upstream in (a, b):
                attach(upstream, store, clock=clock, env=env_with(fake))
            connector, conn = config.connectors["fakeapi"], config.connections["api"]
            await a.call(connector, "ListItems", conn, {}, retry=False)
            await b.call(connector, "ListItems", conn, {}, retry=False)  # both cached now
            clock.now += fake.expires_in  # both need a refresh
            await a.call(connector, "ListItems", conn, {}, retry=False)
            await b.call(connector, "ListItems", conn, {}, retry=False)

    asyncio.run(two_processes())
    assert len(fake.grants("refresh_token")) == 1
    stored = store.get("api")
    assert stored is not None and not stored.error
    assert fake.api_requests[-1] == fake.api_requests[-2] == stored.access_token


def test_the_daemon_uses_tokens_of_a_new_hookd_connect_without_a_restart(
        tmp_path: Path, fake: FakeAuthServer) -> None:
    root = write_config(tmp_path, fake)
    config, clock = load(root, fake), Clock()
    first = seeded(root, fake, clock)
    store = FileTokenStore(root / "state")
    connector, conn = config.connectors["fakeapi"], config.connections["api"]

    async def one_client() -> None:
        async with Upstream(clock=clock, env=env_with(fake)) as upstream:
            attach(upstream, store, clock=clock, env=env_with(fake))
            fake.refresh_tokens.pop(str(first.refresh_token))  # revoked by the user
            clock.now += fake.expires_in
            with pytest.raises(PermanentError, match="hookd connect api"):
                await upstream.call(connector, "ListItems", conn, {}, retry=False)
            seeded(root, fake, clock)  # what `hookd connect api` writes, from another process
            response = await upstream.call(connector, "ListItems", conn, {}, retry=False)
            assert response.status_code == 200

    asyncio.run(one_client())


CALL_FLOW = """\
    name: uses-api
    trigger: {connector: http}
    steps:
      - id: items
        call: {connector: fakeapi, operation: ListItems, connection: api}
"""


def test_a_revoked_refresh_token_names_the_fix(tmp_path: Path, fake: FakeAuthServer) -> None:
    root = write_config(tmp_path, fake, flows={"uses-api": CALL_FLOW})
    config, clock = load(root, fake), Clock()
    first = seeded(root, fake, clock)
    httpx.post(f"{fake.base_url}/revoke", data={"token": first.refresh_token}, timeout=10)
    clock.now += fake.expires_in  # expired: a refresh is needed, and refused
    with pytest.raises(PermanentError) as failure:
        list_items(config, clock, fake)
    message = str(failure.value)
    assert "hookd connect api" in message and "invalid_grant" in message
    assert first.refresh_token not in message and first.access_token not in message
    stored = FileTokenStore(root / "state").get("api")
    assert stored is not None and stored.error == "invalid_grant"
    fake.token_requests.clear()
    with pytest.raises(PermanentError, match="hookd connect api"):
        list_items(config, clock, fake)  # known dead: the provider is not asked again
    assert not fake.token_requests

    check = subprocess.run([sys.executable, "-m", "hookd", "check", str(root)],
                           env=env_with(fake), capture_output=True, text=True, timeout=60)
    assert check.returncode == 1
    assert "connections/api.yaml" in check.stdout and "hookd connect api" in check.stdout


def test_check_names_a_connection_never_connected(tmp_path: Path, fake: FakeAuthServer) -> None:
    root = write_config(tmp_path, fake, flows={"uses-api": CALL_FLOW})
    run = subprocess.run([sys.executable, "-m", "hookd", "check", str(root)],
                         env=env_with(fake), capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "connection 'api': no OAuth token" in run.stdout
    assert "run `hookd connect api`" in run.stdout
    offline = subprocess.run([sys.executable, "-m", "hookd", "check", "--offline-secrets",
                              str(root)], env=env_with(fake), capture_output=True, text=True,
                             timeout=60)
    assert offline.returncode == 0, offline.stdout  # CI without the state: not an error


def test_status_reports_a_revoked_refresh_token_with_the_fix(tmp_path: Path,
                                                             fake: FakeAuthServer) -> None:
    public, admin = free_port(), free_port()
    root = write_config(tmp_path, fake, flows={"uses-api": CALL_FLOW}, public=public, admin=admin)
    config, clock = load(root, fake), Clock()
    first = seeded(root, fake, clock)
    daemon = subprocess.Popen([sys.executable, "-m", "hookd", "run", str(root)],
                              env=env_with(fake), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    status = [sys.executable, "-m", "hookd", "status", "--config", str(root)]
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=2)
                   .status_code == 200, what="the daemon to be ready")
        healthy = subprocess.run(status, capture_output=True, text=True, timeout=30)
        assert healthy.returncode == 0, healthy.stdout
        assert "connection api" not in healthy.stdout

        httpx.post(f"{fake.base_url}/revoke", data={"token": first.refresh_token}, timeout=10)
        clock.now += fake.expires_in
        with pytest.raises(PermanentError):
            list_items(config, clock, fake)  # the refresh is refused: recorded in the state
        text = subprocess.run(status, capture_output=True, text=True, timeout=30)
        assert text.returncode == 1
        assert ("connection api: the refresh token no longer works (invalid_grant); "
                "run `hookd connect api`") in text.stdout
        doc = json.loads(subprocess.run([*status, "--format", "json"], capture_output=True,
                                        text=True, timeout=30).stdout)
        assert doc["connections"]["api"]["fix"] == "run `hookd connect api`"
        assert first.refresh_token not in text.stdout and first.access_token not in text.stdout
    finally:
        daemon.terminate()
        _, err = daemon.communicate(timeout=30)
    assert first.refresh_token not in err and first.access_token not in err  # nor in the logs
