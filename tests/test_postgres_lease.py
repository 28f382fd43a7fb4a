"""`claim_lease` (hookd.yaml) reaches the worker of a real replica: when a replica is
killed mid-run, another replica resumes the run once the lease it was given ran out —
not sooner (the dead replica's claim held) and not after the old fixed 60 s
(docs/scale-out.md, "Failover")."""

from __future__ import annotations

import json
import signal
import sys
import time

import httpx

from tests.test_daemon import wait_until
from tests.test_scaleout import Cluster, _callback_url, cluster, http_flow

__all__ = ["cluster"]  # the fixture, used by name

# Waits while the hold file exists; leaves when its parent (the worker) is gone, as a
# step of a killed replica would not go on.
STEP = ("import os, sys, time\n"
        "hold, log, parent = sys.argv[1], sys.argv[2], os.getppid()\n"
        "open(log, 'a').write('start\\n')\n"
        "while os.path.exists(hold):\n"
        "    if os.getppid() != parent: sys.exit(1)\n"
        "    time.sleep(0.05)\n"
        "open(log, 'a').write('end\\n')\n")


def test_a_killed_replicas_run_is_resumed_by_another_after_the_configured_lease(
        cluster: Cluster) -> None:
    lease = 20.0  # the lowest claim_lease hookd accepts
    with (cluster.config / "hookd.yaml").open("a") as f:
        f.write(f"claim_lease: {lease:g}s\n")
    hold, log = cluster.tmp / "hold", cluster.tmp / "steps.log"
    argv = [sys.executable, "-c", STEP, str(hold), str(log)]
    (cluster.config / "flows" / "slow.yaml").write_text(
        http_flow("slow", f"  - id: wait\n    run: {json.dumps(argv)}\n"))
    hold.touch()
    [first] = cluster.start(1)
    url = wait_until(lambda: _callback_url(cluster, "slow"), 20, "the flow's callback URL")
    assert httpx.post(url, json={"n": 1}, timeout=10).status_code == 202
    wait_until(lambda: log.exists() and log.read_text() == "start\n", 30,
               "the first replica running the step")
    cluster.start(1)  # the second replica: idle, its worker polling the shared queue

    def left() -> float:
        """Seconds until the running delivery's claim runs out (the database's clock)."""
        [(seconds,)] = cluster.query("SELECT extract(epoch FROM lease_until - now())"
                                     " FROM deliveries WHERE status = 'running'")
        return float(seconds)

    # Kill the first replica just after it renewed its claim: the lease alone then says
    # when the other may resume (a renewal every third: more than 2/3 of it is left).
    remaining = wait_until(lambda: (r := left()) > lease - 1.5 and r, 3 * lease,
                           "a renewal of the claim")
    assert remaining <= lease + 0.5, remaining  # the claim's lease is claim_lease's
    first.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    first.proc.wait(10)
    hold.unlink()
    wait_until(lambda: log.read_text().endswith("end\n"), 3 * lease, "the run resumed")
    resumed = time.monotonic() - killed
    # Not before the claim ran out, and soon after (the other worker polls twice a
    # second). The default lease (30 s) or the old fixed one (60 s) would take longer.
    assert remaining - 1.5 <= resumed <= remaining + 8, (remaining, resumed)
    assert log.read_text() == "start\nstart\nend\n"  # the interrupted step ran again
    runs = cluster.query("SELECT status, attempt FROM runs")
    assert runs == [("succeeded", 1)]  # the same run, resumed: not a new attempt
