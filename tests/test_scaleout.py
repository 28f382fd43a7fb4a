"""Three real hookd replicas on one PostgreSQL database, behind a balancer, against the
fake GitHub (docs/scale-out.md): one hook per flow when they start together; kill -9 of
the leader under load loses no acknowledged delivery and a new leader reconciles a flow
added afterwards within 15 s; a flow's ``concurrency: 1`` holds across replicas."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.fakes.balancer import Balancer
from tests.fakes.github import FakeGitHub, free_port, serve, serve_app
from tests.test_daemon import wait_until

CONNECTOR = Path(__file__).resolve().parent / "data" / "reconcile" / "connectors" / "github"
TOKEN = "ghp_scaleout_token"


def github_flow(name: str, repo: str) -> str:
    return (f"name: {name}\ntrigger:\n  connector: github\n  operation: webhook-trigger\n"
            f"  connection: gh\n  parameters: {{owner: o, repo: {repo}}}\n"
            "  body: {events: [push]}\n"
            "steps:\n  - id: note\n    log: {message: hello}\n")


def http_flow(name: str, steps: str, extra: str = "") -> str:
    return f"name: {name}\ntrigger: {{connector: http}}\n{extra}steps:\n{steps}"


@dataclass
class Replica:
    proc: subprocess.Popen[str]
    public: str
    admin: str
    state: Path

    @property
    def name(self) -> str:
        return (self.state / "replica.id").read_text().strip()

    def ready(self) -> bool:
        return httpx.get(self.admin + "/readyz", timeout=2).status_code == 200


@dataclass
class Cluster:
    config: Path
    url: str
    gh: FakeGitHub
    balancer: Balancer
    public_url: str
    replicas: list[Replica] = field(default_factory=list)
    tmp: Path = Path()

    def start(self, n: int) -> list[Replica]:
        started = []
        for i in range(len(self.replicas), len(self.replicas) + n):
            public, admin = free_port(), free_port()
            state = self.tmp / f"state{i}"
            proc = subprocess.Popen(
                [sys.executable, "-m", "hookd", "run", "--config", str(self.config),
                 "--state-dir", str(state), "--public", f"127.0.0.1:{public}",
                 "--admin", f"127.0.0.1:{admin}"],
                env={**os.environ, "GH_TOKEN": TOKEN, "HOOKD_DB": self.url},
                stdout=subprocess.DEVNULL, stderr=(self.tmp / f"replica{i}.log").open("w"),
                text=True)
            started.append(Replica(proc, f"http://127.0.0.1:{public}",
                                   f"http://127.0.0.1:{admin}", state))
        self.replicas += started
        self.balancer.backends[:] = [r.public for r in self.replicas]
        for r in started:
            wait_until(r.ready, 60, f"replica {r.admin} ready")
        return started

    def leading(self) -> Replica | None:
        """The live replica that holds the leader lock now, or None (between leaders)."""
        name = leader_name(self.url)
        return next((r for r in self.replicas if r.proc.poll() is None and r.name == name),
                    None)

    def leader(self) -> Replica:
        return wait_until(self.leading, 20, "a leader")

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql.encode()).fetchall()


def leader_name(url: str) -> str | None:
    """The name of the replica holding the leader lock of `url`'s database (the store's
    own query: the lock is looked up in this database only, not in the other tests')."""
    from hookd.store.postgres.replicas import leader_name as read

    async def go() -> str | None:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await read(conn)

    return asyncio.run(go())


@contextmanager
def running(tmp: Path, url: str) -> Iterator[Cluster]:
    """A cluster on `url`'s database: the fake GitHub, the balancer and the shared config
    directory (no flows yet); its replicas are killed at the end. bench/bench_replicas.py
    runs its replicas with it too."""
    balancer = Balancer([])
    with serve(FakeGitHub(token=TOKEN, ping=True)) as gh, serve_app(balancer.app()) as public:
        config = tmp / "config"
        (config / "flows").mkdir(parents=True)
        (config / "connections").mkdir()
        shutil.copytree(CONNECTOR, config / "connectors" / "github")
        (config / "hookd.yaml").write_text(textwrap.dedent(f"""\
            public_url: {public}
            store: ${{env:HOOKD_DB}}
            shutdown_timeout: 5s
            reconcile: {{retries: 1}}
            """))
        (config / "connections" / "gh.yaml").write_text(
            f"connector: github\nbase_url: {gh.base_url}\nparameters:\n  token: ${{env:GH_TOKEN}}\n")
        c = Cluster(config, url, gh, balancer, public, tmp=tmp)
        try:
            yield c
        finally:
            for r in c.replicas:
                if r.proc.poll() is None:
                    r.proc.kill()
                r.proc.wait()


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str) -> Iterator[Cluster]:
    with running(tmp_path, postgres_url) as c:
        yield c


def test_replicas_starting_together_create_each_hook_once(cluster: Cluster) -> None:
    for n in range(4):
        (cluster.config / "flows" / f"g{n}.yaml").write_text(github_flow(f"g{n}", f"r{n}"))
    cluster.start(3)
    wait_until(lambda: len(cluster.gh.hooks) == 4, 30, "four hooks")
    leader = cluster.leader()
    # Another pass (a reload on every replica) changes nothing upstream either.
    for r in cluster.replicas:
        r.proc.send_signal(signal.SIGHUP)
    time.sleep(0)  # the reloads are asynchronous; the check below polls the outcome
    wait_until(lambda: all(r.ready() for r in cluster.replicas), 20, "replicas ready")
    assert sorted(h.repo for h in cluster.gh.hooks.values()) == ["r0", "r1", "r2", "r3"]
    creates = [p for m, p in cluster.gh.log if m == "POST"]
    assert len(creates) == 4, creates  # never a second create (no 422 from a duplicate)
    token = (leader.state / "admin.token").read_text().strip()
    status = httpx.get(leader.admin + "/api/status", timeout=5,
                       headers={"Authorization": f"Bearer {token}"}).json()
    replicas = status["store"]["replicas"]
    assert sorted(r["name"] for r in replicas) == sorted(r.name for r in cluster.replicas)
    assert [r["name"] for r in replicas if r["leader"]] == [leader.name]


def test_kill_9_of_the_leader_under_load_loses_no_acknowledged_delivery(
        cluster: Cluster) -> None:
    (cluster.config / "flows" / "load.yaml").write_text(
        http_flow("load", "  - id: note\n    log: {message: '{{ trigger.body.n }}'}\n"))
    cluster.start(3)
    url = wait_until(lambda: _callback_url(cluster, "load"), 20, "the flow's callback URL")
    acknowledged: list[int] = []
    stop = threading.Event()

    def send() -> None:
        n = 0
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                n += 1
                try:
                    if client.post(url, json={"n": n}).status_code == 202:
                        acknowledged.append(n)
                except httpx.HTTPError:
                    pass

    senders = [threading.Thread(target=send) for _ in range(4)]
    for t in senders:
        t.start()
    try:
        wait_until(lambda: len(acknowledged) > 100, 60, "load")
        leader = cluster.leader()
        leader.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        cluster.balancer.backends.remove(leader.public)
        wait_until(lambda: len(acknowledged) > 300, 60, "more load after the kill")
    finally:
        stop.set()
        for t in senders:
            t.join()
    # Every acknowledged delivery ran (at least once), on the survivors.
    def ran() -> set[int]:
        rows = cluster.query(
            "SELECT DISTINCT d.body FROM deliveries d JOIN runs r ON r.delivery_id = d.id"
            " WHERE d.flow = 'load' AND d.status = 'done' AND r.status = 'succeeded'")
        return {json.loads(bytes(b[0]))["n"] for b in rows}

    wait_until(lambda: set(acknowledged) <= ran(), 90,
               f"all {len(acknowledged)} acknowledged deliveries to run")

    # A flow added now gets its hook from the new leader within 15 s of the kill... or
    # of when it was written, whichever is later.
    new_leader = cluster.leader()
    assert new_leader is not leader
    (cluster.config / "flows" / "late.yaml").write_text(github_flow("late", "late"))
    written = time.monotonic()
    wait_until(lambda: any(h.repo == "late" for h in cluster.gh.hooks.values()), 15,
               "the late flow's hook")
    assert time.monotonic() - max(written, killed) < 15


def test_concurrency_1_never_overlaps_across_replicas(cluster: Cluster) -> None:
    spans = cluster.tmp / "spans"
    script = (f"import sys, time; t = time.time(); time.sleep(0.3);"
              f" open({str(spans)!r}, 'a').write(f'{{t}} {{time.time()}}\\n')")
    steps = f"  - id: slow\n    run: {json.dumps([sys.executable, '-c', script])}\n"
    (cluster.config / "flows" / "one.yaml").write_text(
        http_flow("one", steps, extra="concurrency: 1\n"))
    cluster.start(3)
    url = wait_until(lambda: _callback_url(cluster, "one"), 20, "the flow's callback URL")
    for n in range(8):  # round-robin: each replica receives some
        assert httpx.post(url, json={"n": n}, timeout=10).status_code == 202
    wait_until(lambda: spans.exists() and len(spans.read_text().splitlines()) == 8, 60,
               "eight runs")
    intervals = sorted(tuple(map(float, line.split())) for line in spans.read_text().splitlines())
    for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
        assert start >= end, f"runs overlapped: {intervals}"
    runners = cluster.query(
        "SELECT count(DISTINCT lease_owner) FROM deliveries WHERE flow = 'one'")
    del runners  # who ran them is not the point; that they never overlapped is


def _callback_url(cluster: Cluster, flow: str) -> str | None:
    """The request-trigger flow's callback URL, derived as every replica derives it (from
    the server secret in the database)."""
    from hookd.config.loader import load_config
    from hookd.subscriptions.desired import desired_subscriptions

    rows = cluster.query("SELECT value FROM hookd_meta WHERE key = 'server_secret'")
    if not rows:
        return None
    config, diagnostics = load_config(cluster.config, env={**os.environ, "GH_TOKEN": TOKEN,
                                                            "HOOKD_DB": cluster.url})
    assert config is not None, diagnostics
    for desired in desired_subscriptions(config, bytes(rows[0][0])):
        if desired.flow == flow:
            return desired.callback_url
    return None
