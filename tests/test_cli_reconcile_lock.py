"""`hookd apply` and `hookd teardown` on PostgreSQL reconcile only as the leader
(hookd.cli.commands._reconcile_lock): while another process (a replica) holds the leader
lock they refuse and change nothing upstream, or with ``--wait`` take the lock when it is
released; a manual apply can no longer race the leader's own pass."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from tests.test_daemon import Running, daemon_on, wait_until
from tests.test_scaleout import TOKEN, Cluster, cluster, github_flow

__all__ = ["cluster", "daemon_on"]  # the fixtures, used by name

# A replica as far as the lock and `hookd status` can tell: its heartbeat row, then the
# leader lock (hookd.store.postgres.leader), held until it is killed.
HOLDER = textwrap.dedent("""
    import asyncio, sys
    from hookd.store.postgres import connection, replicas
    from hookd.store.postgres.leader import Leadership

    async def main():
        async with await connection.connect(sys.argv[1]) as conn:
            await replicas.heartbeat(conn, sys.argv[2])
        lead = Leadership(sys.argv[1], name=sys.argv[2], retry=0.2,
                          on_elected=lambda: print("leading", flush=True))
        lead.start()
        await asyncio.Event().wait()

    asyncio.run(main())
""")


def env(cluster: Cluster) -> dict[str, str]:
    return {**os.environ, "GH_TOKEN": TOKEN, "HOOKD_DB": cluster.url}


def hookd(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hookd", *args, "--config", str(cluster.config)],
                          capture_output=True, text=True, timeout=60, env=env(cluster))


def test_apply_and_teardown_refuse_while_a_replica_leads_and_wait_for_the_lock(
        cluster: Cluster) -> None:
    (cluster.config / "flows" / "g.yaml").write_text(github_flow("g", "repo"))
    assert hookd(cluster, "migrate").returncode == 0
    out = cluster.tmp / "holder.out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, cluster.url, "replica-x"],
                              stdout=out.open("w"), env=env(cluster))
    try:
        wait_until(lambda: "leading" in out.read_text(), 20, "the holder leading")

        refused = hookd(cluster, "apply")
        assert refused.returncode == 1, refused.stderr
        assert "replica replica-x holds the reconcile lock" in refused.stderr
        assert "nothing was changed" in refused.stderr and "--wait SECONDS" in refused.stderr
        assert cluster.gh.hooks == {}
        down = hookd(cluster, "teardown", "--yes")
        assert down.returncode == 1 and "Stop the daemon (every replica) first" in down.stderr, down.stderr

        err = cluster.tmp / "apply.err"
        waiting = subprocess.Popen(
            [sys.executable, "-m", "hookd", "apply", "--config", str(cluster.config),
             "--wait", "60"], stdout=subprocess.PIPE, stderr=err.open("w"), text=True,
            env=env(cluster))
        wait_until(lambda: "waiting up to 60 s" in err.read_text(), 30, "apply waiting")
        assert cluster.gh.hooks == {}  # still waiting: nothing done yet
        holder.send_signal(signal.SIGKILL)  # the leader dies: its lock goes with it
        stdout, _ = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, err.read_text()
        assert "created" in stdout
        assert [h.repo for h in cluster.gh.hooks.values()] == ["repo"]
        # The command let go of the lock when it was done: a replica may lead again (the
        # server ends the command's session on its own time after the disconnect).
        wait_until(lambda: cluster.query(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND objid = 2 AND objsubid = 2") == [(0,)], 10, "the lock released")
    finally:
        holder.kill()
        holder.wait()
    torn = hookd(cluster, "teardown", "--yes")  # no replica leads: it may
    assert torn.returncode == 0, torn.stderr
    assert cluster.gh.hooks == {}


class LosingLead:
    """A leadership that is granted at once and lost when `lose` is called (as when the
    lock's database session ends), calling its `on_lost` as the real one does."""

    def __init__(self, on_lost: Any) -> None:
        self.on_lost, self.leading, self.at_start, self.attempts = on_lost, False, True, 0

    def start(self) -> None:
        self.leading, self.attempts = True, 1

    def lose(self) -> None:
        self.leading = False
        self.on_lost()

    async def aclose(self) -> None:
        self.leading = False


class OneStore:
    def __init__(self) -> None:
        self.lead: LosingLead | None = None

    def leadership(self, *, on_elected: Any = None, on_lost: Any = None) -> LosingLead:
        self.lead = LosingLead(on_lost)
        return self.lead

    async def describe(self) -> dict[str, object]:
        return {"backend": "postgresql", "leader": None}


def test_a_pass_that_loses_the_lock_half_way_stops_and_says_so(
        capsys: pytest.CaptureFixture[str]) -> None:
    from hookd.cli.commands._reconcile_lock import as_leader

    store = OneStore()
    done: list[str] = []

    async def reconcile() -> str:
        done.append("first item")
        assert store.lead is not None
        store.lead.lose()
        await asyncio.sleep(5)  # cancelled here
        done.append("second item")
        return "report"

    result = asyncio.run(as_leader(cast(Any, store), "apply", 0, reconcile))
    assert result is None and done == ["first item"]
    assert "lost the reconcile lock half-way" in capsys.readouterr().err

    async def quick() -> str:
        return "report"

    assert asyncio.run(as_leader(cast(Any, OneStore()), "apply", 0, quick)) == "report"


def test_on_sqlite_apply_refuses_next_to_the_running_daemon_and_waits_for_its_stop(
        daemon_on: Callable[..., Running], tmp_path: Path) -> None:
    daemon = daemon_on(flows=("a",))
    daemon.notify.wait_for("READY")
    config = tmp_path / "config"
    refused = subprocess.run([sys.executable, "-m", "hookd", "apply", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1, refused.stderr
    assert "the daemon running on this state directory" in refused.stderr
    assert "nothing was changed" in refused.stderr

    err = tmp_path / "apply.err"
    waiting = subprocess.Popen([sys.executable, "-m", "hookd", "apply", str(config), "--wait",
                                "60"], stdout=subprocess.PIPE, stderr=err.open("w"), text=True)
    wait_until(lambda: "waiting up to 60 s" in err.read_text(), 30, "apply waiting")
    assert daemon.stop() == 0  # the daemon lets go of the lock as it stops
    waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err.read_text()
