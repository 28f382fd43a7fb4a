"""Crash test: what hookd acknowledged survives ``kill -9`` and is processed after restart.

Real processes (tests/ingest_launcher.py: uvicorn + hookd's app + inbox, and a stand-in
worker that claims and finishes deliveries), a real SQLite file, real signed requests with
concurrency. The server is killed with SIGKILL in the middle of the load; after a restart
every delivery that got a 2xx answer must be in the store and end up processed. A
delivery recorded whose answer was cut off by the kill is fine; one answered and not
recorded would be a failure. Sending everything again after the restart shows the dedup
holds across the crash: nothing is recorded twice.

`crash_run` is shared with bench/bench_crash.py, which runs it with 5,000 deliveries.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hookd.callbacks.verify import sign
from tests.ingest_launcher import DATA, make_config, subscription, wait_listening

LAUNCHER = Path(__file__).resolve().parent / "ingest_launcher.py"
BODY = (DATA / "github" / "push.0.json").read_bytes()


@dataclass
class CrashReport:
    sent: int
    acknowledged: int  # 2xx answers before the kill
    recorded_at_kill: int  # rows in the store right after the kill
    missing: list[str]  # acknowledged but not in the store (must be empty)
    not_processed: list[str]  # acknowledged, in the store, not done after restart
    recorded_after_resend: int  # distinct deliveries after sending everything again
    resend_failures: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(state: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "--state", str(state), "--port", str(port), "--consume"],
            stdout=subprocess.DEVNULL, stderr=f,
        )
    wait_listening(port)
    return proc


class _Connection:
    """A minimal HTTP/1.1 keep-alive client: httpx's per-request cost on a busy 2-core
    machine would make the client, not the server, the bottleneck of this test."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n{head}\r\n"
            .encode() + body
        )
        try:
            await self.writer.drain()
            status_line = await self.reader.readuntil(b"\r\n")
            length = 0
            while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            payload = await self.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.close()
            raise ConnectionError("connection lost") from None
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _send_all(
    port: int, path: str, headers: dict[str, str], ids: list[str], concurrency: int,
    kill_after: int | None, proc: subprocess.Popen[bytes] | None,
) -> dict[str, tuple[int, str]]:
    """POST one request per delivery id; kill -9 `proc` after `kill_after` 2xx answers."""
    answers: dict[str, tuple[int, str]] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in ids:
        queue.put_nowait(i)
    killed = asyncio.Event()

    async def worker() -> None:
        conn = _Connection(port)
        try:
            while not queue.empty() and not killed.is_set():
                delivery = queue.get_nowait()
                try:
                    status, body = await conn.post(path, {**headers, "x-github-delivery": delivery}, BODY)
                except ConnectionError:
                    continue  # cut off by the kill: unknown outcome, allowed either way
                if 200 <= status < 300:
                    answers[delivery] = (status, json.loads(body)["delivery"])
                if kill_after is not None and len(answers) >= kill_after and not killed.is_set():
                    killed.set()
                    assert proc is not None
                    os.kill(proc.pid, signal.SIGKILL)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers


def crash_run(root: Path, n: int = 500, concurrency: int = 16, kill_fraction: float = 0.4) -> CrashReport:
    state, log = root / "state", root / "server.log"
    port = _free_port()
    config = make_config(state, f"http://127.0.0.1:{port}")
    target = subscription(config, state, "push")
    headers = {"content-type": "application/json", "x-github-event": "push",
               **sign(target.verification, target.secret, BODY, now=time.time())}
    ids = [f"crash-{i:05d}" for i in range(n)]

    proc = _start(state, port, log)
    try:
        acked = asyncio.run(_send_all(port, target.path, headers, ids, concurrency,
                                      int(n * kill_fraction), proc))
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(state / "hookd.db")  # reads WAL frames the dead process committed
    rows = dict(conn.execute("SELECT id, status FROM deliveries").fetchall())
    missing = sorted(d for d, (_, delivery_id) in acked.items() if delivery_id not in rows)
    recorded_at_kill = len(rows)
    conn.close()

    proc = _start(state, port, log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            conn = sqlite3.connect(state / "hookd.db")
            left = conn.execute(
                "SELECT count(*) FROM deliveries WHERE status != 'done'").fetchone()[0]
            conn.close()
            if left == 0:
                break
            time.sleep(0.1)
        conn = sqlite3.connect(state / "hookd.db")
        status = dict(conn.execute("SELECT id, status FROM deliveries").fetchall())
        conn.close()
        not_processed = sorted(
            delivery_id for _, delivery_id in acked.values() if status.get(delivery_id) != "done"
        )
        resent = asyncio.run(_send_all(port, target.path, headers, ids, concurrency, None, None))
        conn = sqlite3.connect(state / "hookd.db")
        distinct = conn.execute("SELECT count(DISTINCT dedup_key) FROM deliveries").fetchone()[0]
        total = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        conn.close()
        assert distinct == total, "a delivery id was recorded twice"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # After the resend every id must have an answer pointing at its one recorded delivery.
    mismatched = [d for d, (_, delivery_id) in acked.items() if resent.get(d, (0, ""))[1] != delivery_id]
    return CrashReport(
        sent=n, acknowledged=len(acked), recorded_at_kill=recorded_at_kill, missing=missing,
        not_processed=not_processed, recorded_after_resend=total,
        resend_failures=(n - len(resent)) + len(mismatched),
    )


def test_acknowledged_deliveries_survive_kill_9_and_run_after_restart(tmp_path: Path) -> None:
    report = crash_run(tmp_path, n=400, concurrency=16)
    assert report.acknowledged >= 100  # the kill really happened mid-load
    assert report.missing == []  # every 2xx was durably recorded
    assert report.recorded_at_kill >= report.acknowledged
    assert report.not_processed == []  # …and processed after the restart
    assert report.resend_failures == 0  # repeats answer with the original delivery id
    assert report.recorded_after_resend == report.sent  # each delivery recorded exactly once
