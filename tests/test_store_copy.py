"""`hookd store copy` and `hookd migrate`: an install's SQLite state moved into PostgreSQL,
as a user would do it (a real daemon made the state)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from tests.test_daemon import Running, callback_url, daemon_on, wait_until

__all__ = ["daemon_on"]  # the fixture, used by name


def hookd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hookd", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_copy_moves_runs_deliveries_and_the_secret_and_refuses_a_used_target(
        daemon_on: Callable[..., Running], tmp_path: Path, postgres_url: str) -> None:
    daemon = daemon_on(flows=("a",))
    daemon.notify.wait_for("READY")
    url = callback_url(tmp_path)
    for n in range(3):
        assert httpx.post(url, json={"n": n}, timeout=5).status_code == 202
    wait_until(lambda: len(daemon.get("/api/runs?status=succeeded").json()["runs"]) == 3,
               what="three runs")
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(15) == 0

    from hookd.oauth.tokens import TokenSet
    from hookd.store.tokens import FileTokenStore

    FileTokenStore(tmp_path / "state").put("gh", TokenSet(access_token="at-1", refresh_token="rt-1"))
    # The URL through a secret reference, as hookd.yaml would name it.
    done = hookd("store", "copy", "--from", f"sqlite:{tmp_path / 'state'}",
                 "--to", "${env:TEST_DB_URL}", env={"TEST_DB_URL": postgres_url})
    assert done.returncode == 0, done.stderr
    assert "3 deliveries, 3 runs" in done.stdout
    assert "1 connections' OAuth tokens" in done.stdout and "at-1" not in done.stdout
    password = psycopg.conninfo.conninfo_to_dict(postgres_url).get("password")
    assert not password or f":{password}@" not in done.stdout

    with psycopg.connect(postgres_url) as conn:
        secret = conn.execute("SELECT value FROM hookd_meta WHERE key = 'server_secret'").fetchone()
        assert secret is not None and bytes(secret[0]) == (tmp_path / "state" / "server.secret").read_bytes()
        statuses = conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
        assert statuses == [("succeeded", 3)]
        steps = conn.execute("SELECT count(*) FROM run_steps").fetchone()
        assert steps is not None and steps[0] == 3
        tokens = conn.execute("SELECT tokens FROM oauth_tokens WHERE connection = 'gh'").fetchone()
        assert tokens is not None and json.loads(tokens[0])["refresh_token"] == "rt-1"
        bodies = sorted(bytes(r[0]) for r in conn.execute("SELECT body FROM deliveries"))
        assert bodies == [b'{"n":0}', b'{"n":1}', b'{"n":2}']

    again = hookd("store", "copy", "--from", f"sqlite:{tmp_path / 'state'}", "--to", postgres_url)
    assert again.returncode == 1
    assert "already has 3 deliveries" in again.stderr and "nothing was copied" in again.stderr

    missing = hookd("store", "copy", "--from", f"sqlite:{tmp_path / 'nothing'}", "--to", postgres_url)
    assert missing.returncode == 1 and "no hookd state here" in missing.stderr
    usage = hookd("store", "copy", "--from", str(tmp_path / "state"), "--to", postgres_url)
    assert usage.returncode == 2 and "expected sqlite:DIR" in usage.stderr


def test_migrate_applies_once_and_says_so(tmp_path: Path, postgres_url: str) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "hookd.yaml").write_text(
        "public_url: https://hooks.example.net\nstore: ${env:TEST_DB_URL}\n")
    env = {"TEST_DB_URL": postgres_url}
    first = hookd("migrate", "--config", str(tmp_path), env=env)
    assert first.returncode == 0, first.stderr
    assert "applied migrations 1" in first.stdout
    second = hookd("migrate", "--config", str(tmp_path), env=env)
    assert second.returncode == 0 and "up to date" in second.stdout
    down = hookd("migrate", "--config", str(tmp_path),
                 env={"TEST_DB_URL": "postgresql://hookd:pw@127.0.0.1:1/hookd"})
    assert down.returncode == 2 and "127.0.0.1" in down.stderr and ":pw@" not in down.stderr
