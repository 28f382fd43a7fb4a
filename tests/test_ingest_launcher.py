"""tests/ingest_launcher.py on a PostgreSQL store, as bench/bench_ingest.py and
bench/bench_pipeline.py ``--store postgresql`` run it: a real launcher process, a real
database, real signed requests; and `tests.pgserver.ServerCpu`, which those benchmarks
print beside hookd's CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from hookd.callbacks.verify import sign
from tests import pgserver
from tests.ingest_launcher import (
    DATA,
    STORE_URL_ENV,
    make_config,
    store_server_secret,
    store_setting,
    subscription,
    wait_listening,
)
from tests.test_crash_ingest import _free_port

LAUNCHER = Path(__file__).resolve().parent / "ingest_launcher.py"
BODY = (DATA / "github" / "push.0.json").read_bytes()


def _post(port: int, path: str, headers: dict[str, str], delivery: str) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}{path}", content=BODY, timeout=10, headers={
        "content-type": "application/json", "x-github-event": "push",
        "x-github-delivery": delivery, **headers})


def test_launcher_records_in_postgresql_with_the_stores_secret(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STORE_URL_ENV, postgres_url)
    state = tmp_path / "state"
    port = _free_port()
    config = make_config(state, f"http://127.0.0.1:{port}", store=store_setting("postgresql"))
    target = subscription(config, state, "push", store_server_secret(config))
    # A token derived from a state directory's own secret file, not the database's.
    stranger = subscription(config, tmp_path / "elsewhere", "push")
    headers = sign(target.verification, target.secret, BODY, now=time.time())
    log = tmp_path / "launcher.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "--state", str(state), "--port", str(port),
             "--store", "postgresql"], stdout=subprocess.DEVNULL, stderr=f, env=os.environ)
    try:
        wait_listening(port)
        accepted = _post(port, target.path, headers, "pg-launcher-1")
        refused = _post(port, stranger.path, headers, "pg-launcher-2")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    assert accepted.status_code == 202, accepted.text
    assert refused.status_code >= 400
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT subscription_id, flow FROM deliveries").fetchall()
    assert rows == [(target.subscription_id, "push")]
    # The inbox's line, printed once the store closed on uvicorn's loop.
    assert "inbox: 1 requests, 1 deliveries in 1 transactions" in log.read_text()


def test_server_cpu_counts_the_work_done_for_the_database(
        postgres_server: str, postgres_url: str) -> None:
    cpu = pgserver.ServerCpu(postgres_server, postgres_url)
    with psycopg.connect(postgres_url) as conn:
        conn.execute("SELECT 1")
        cpu.start()
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
        spent = cpu.stop()
    assert spent > 0.05
    with psycopg.connect(postgres_url) as conn:
        excluded = pgserver.ServerCpu(postgres_server, postgres_url,
                                      exclude=[conn.info.backend_pid])
        excluded.start()
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
        assert excluded.stop() < 0.05  # the excluded session's query is not counted
