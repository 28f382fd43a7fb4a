"""hookd reaches a connector's real host through the standard HTTPS_PROXY, trusting the CA
in SSL_CERT_FILE: the built-in github connector, unchanged (api.github.com), creates and
deletes a hook on the GitHub fake behind a CONNECT proxy with a test CA."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.github import FakeGitHub
from tests.fakes.tls_proxy import ConnectProxy, have_openssl, make_certificates, serve_tls

TOKEN = "ghp_proxy_test_token"


@pytest.fixture
def fresh_ssl_context() -> Iterator[None]:
    """hookd builds one SSL context per process: rebuild it under this test's CA."""
    from hookd.upstream import client

    client._ssl_context.cache_clear()
    yield
    client._ssl_context.cache_clear()


def hookd(*args: str) -> int:
    from hookd.cli.main import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(list(args))


def test_github_over_https_proxy_with_a_test_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               fresh_ssl_context: None) -> None:
    if not have_openssl():
        pytest.skip("the openssl command line is needed to make the test CA")
    ca, cert, key = make_certificates(tmp_path, "api.github.com")
    gh = FakeGitHub(token=TOKEN)
    gh.base_url = "https://api.github.com"  # the Location it answers
    cfg = tmp_path / "config"
    for sub in ("connections", "flows"):
        (cfg / sub).mkdir(parents=True)
    (cfg / "hookd.yaml").write_text("public_url: https://hooks.example.net\n")
    (cfg / "connections" / "gh.yaml").write_text(
        "connector: github\nparameters:\n  token: ${env:GH_TOKEN}\n")
    flow = cfg / "flows" / "f.yaml"
    flow.write_text("name: f\ntrigger:\n  connector: github\n  operation: webhook-trigger\n"
                    "  connection: gh\n  parameters: {owner: o, repo: r}\n")
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GH_TOKEN", TOKEN)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    with serve_tls(gh.app(), cert, key) as port, ConnectProxy(port) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        state = str(tmp_path / "state")
        assert hookd("apply", str(cfg), "--state-dir", state) == 0
        (hook,) = gh.hooks.values()
        assert hook.config["url"].startswith("https://hooks.example.net/hooks/")
        flow.unlink()
        assert hookd("apply", str(cfg), "--state-dir", state, "--allow-deletes", "1") == 0
        assert gh.hooks == {}
        assert set(proxy.connects) == {"api.github.com:443"}
        # The fake refuses requests without a User-Agent, as GitHub does: all got through.
        assert [m for m, _ in gh.log] == ["GET", "POST", "GET", "DELETE"]
