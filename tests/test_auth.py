"""Admin authentication (`hookd.admin.auth`) against a real `hookd run` (issue 16 item 5).

Before: ``GET /api/runs/{id}`` returned payload data to anyone, ``POST …/replay`` with
``Content-Type: text/plain`` and a foreign ``Origin`` was accepted, and ``Host:
evil.example`` was served (DNS rebinding).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.configdir import admin_headers
from tests.test_daemon import Running, callback_url, daemon_on, wait_until

__all__ = ["daemon_on"]  # a fixture


def test_the_admin_api_needs_the_token_and_refuses_cross_site_mutations(
    daemon_on: Callable[..., Running], tmp_path: Path
) -> None:
    hookd = daemon_on()
    hookd.notify.wait_for("READY")
    assert httpx.post(callback_url(tmp_path), json={"secret": "payload"}, timeout=5).status_code == 202
    (run,) = wait_until(lambda: hookd.get("/api/runs?status=succeeded").json()["runs"], what="run")

    token_file = tmp_path / "state" / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = admin_headers(hookd.state)
    post = {**token, "Content-Type": "application/json"}
    admin = hookd.admin

    def status(method: str, path: str, headers: dict[str, str]) -> int:
        return httpx.request(method, admin + path, headers=headers, timeout=5).status_code

    # Load balancers and Prometheus need no token; the API does.
    assert status("GET", "/healthz", {}) == 200
    assert status("GET", "/readyz", {}) == 200
    assert status("GET", "/metrics", {}) == 200
    for path in (f"/api/runs/{run['id']}", "/api/runs", "/api/status"):
        assert status("GET", path, {}) == 401
        assert status("GET", path, {"Authorization": "Bearer wrong"}) == 401
        assert status("GET", path, token) == 200
    answer = httpx.get(admin + f"/api/runs/{run['id']}", timeout=5)
    assert "payload" not in answer.text and answer.headers["www-authenticate"].startswith("Bearer")

    replay = f"/api/runs/{run['id']}/replay"
    assert status("POST", replay, {"Content-Type": "text/plain"}) in (401, 415)
    assert status("POST", replay, {**token, "Content-Type": "text/plain"}) == 415
    assert status("POST", replay, {**post, "Origin": "https://evil.example"}) == 403
    assert status("POST", replay, {**post, "Sec-Fetch-Site": "cross-site"}) == 403
    # DNS rebinding: a page on evil.example that resolves to 127.0.0.1.
    assert status("GET", "/api/runs", {**token, "Host": "evil.example"}) == 421
    assert status("GET", "/api/runs", {**token, "Host": "localhost"}) == 200
    assert hookd.get("/api/runs").json()["runs"] == [run]  # nothing was replayed
    # The same request done right is accepted.
    assert status("POST", replay, {**post, "Origin": admin}) == 202


def test_a_token_from_a_reference_is_used_by_daemon_and_cli(
    daemon_on: Callable[..., Running], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "a-token-from-the-environment")
    hookd = daemon_on()
    config = tmp_path / "config"
    with (config / "hookd.yaml").open("a") as f:
        f.write("admin: {token: '${env:ADMIN_TOKEN}', hosts: [hookd.internal]}\n")
    hookd.proc.kill()
    hookd.proc.wait()
    proc = subprocess.Popen([sys.executable, "-m", "hookd", "run", "--config", str(config)],
                            env={**os.environ}, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: httpx.get(hookd.admin + "/readyz", timeout=2).status_code == 200,
                   timeout=20, what="ready")
        bearer = {"Authorization": "Bearer a-token-from-the-environment"}
        assert httpx.get(hookd.admin + "/api/status", headers=bearer, timeout=5).status_code == 200
        named = {**bearer, "Host": "hookd.internal:8081"}
        assert httpx.get(hookd.admin + "/api/status", headers=named, timeout=5).status_code == 200
        shown = subprocess.run([sys.executable, "-m", "hookd", "status", "-c", str(config)],
                               capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        assert "a-token-from-the-environment" not in shown.stdout + shown.stderr
        # Without any way to find the token, status says how to give it.
        bare = subprocess.run([sys.executable, "-m", "hookd", "status", "--admin", hookd.admin],
                              capture_output=True, text=True, timeout=30, cwd=tmp_path,
                              env={k: v for k, v in os.environ.items() if k != "HOOKD_ADMIN_TOKEN"})
        assert bare.returncode == 2 and "HOOKD_ADMIN_TOKEN" in bare.stderr
    finally:
        proc.terminate()
        proc.wait(15)


def test_check_warns_when_the_admin_listener_binds_beyond_loopback(tmp_path: Path) -> None:
    (tmp_path / "hookd.yaml").write_text(textwrap.dedent("""
        public_url: https://hooks.example.net
        listen:
          admin: {host: 0.0.0.0, port: 8081}
    """))
    shown = subprocess.run([sys.executable, "-m", "hookd", "check", str(tmp_path)],
                           capture_output=True, text=True, timeout=30)
    out = shown.stdout + shown.stderr
    assert "hookd.yaml:4:" in out and "the admin listener binds 0.0.0.0" in out
    assert "listen.admin.host" in out


def test_run_warns_when_admin_flag_binds_beyond_loopback(tmp_path: Path) -> None:
    from tests.test_daemon import free_port, write_http_config

    write_http_config(tmp_path / "config", tmp_path / "state", {})
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hookd", "run", "--config", str(tmp_path / "config"),
         "--admin", f"0.0.0.0:{port}"], stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                   .status_code == 200, timeout=20, what="ready")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "the admin listener binds 0.0.0.0" in err


def test_the_status_page_forms_pass_the_guard_but_not_from_another_site() -> None:
    """The page's forms are urlencoded (an HTML form cannot send JSON): the guard lets them
    through to the page, which checks its CSRF token; cross-site ones stop at the guard."""
    from hookd.admin.auth import AdminAuth

    guard = AdminAuth("t0ken", frozenset())
    form = {"host": "127.0.0.1:8081", "content-type": "application/x-www-form-urlencoded"}
    assert guard.refusal("POST", "/runs/abc/replay", form) is None
    assert guard.refusal("POST", "/signin", form) is None
    assert guard.refusal("POST", "/api/runs/abc/replay",
                         {**form, "authorization": "Bearer t0ken"})[0] == 415  # type: ignore[index]
    assert guard.refusal("POST", "/runs/abc/replay",
                         {**form, "origin": "https://evil.example"})[0] == 403  # type: ignore[index]
