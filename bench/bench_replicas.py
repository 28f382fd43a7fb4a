"""1, 2 and 3 hookd replicas on one PostgreSQL database: throughput, CPU, failover time.

Throughput and CPU per delivery with 1, 2 and 3 replicas, and the time from a leader's
``kill -9`` to the next reconcile by another replica.

    python bench/bench_replicas.py [--deliveries 2000] [--connections 32] [--replicas 1,2,3]
                                   [--repeat 3] [--failovers 5] [--store-url URL] [--quick]

Each setup is real ``hookd run`` processes (`tests.test_scaleout.running`: one config
directory, a state directory and ``--public``/``--admin`` ports per replica, the fake
GitHub) on a database of its own on ``--store-url`` or ``$HOOKD_TEST_POSTGRES_URL``,
created before and dropped after. The config has one GitHub ``push`` flow of one ``log``
step (as bench_pipeline's); the first replica to lead creates its hook on the fake, and
the benchmark signs the 7 KB push payload with that hook's secret, as GitHub would.

Throughput: a burst of ``--deliveries`` signed deliveries (a unique
``X-GitHub-Delivery`` each) over ``--connections`` keep-alive connections spread over the
replicas round-robin, as a load balancer spreads them (bench_pipeline's load generator).
Printed per setup: acknowledged deliveries/s (202 answers) and their p99, processed
deliveries/s (until every run succeeded, checked in the database: N deliveries done, N
runs and N steps succeeded), the ratio to 1 replica in the same round, and CPU
milliseconds per delivery of the hookd processes (all replicas and their worker
processes) and of the PostgreSQL server (`tests.pgserver.ServerCpu`: that database's
sessions and the shared background processes), and the cores kept busy by hookd with
PostgreSQL and by the load generator (this process): near the machine's core count, a
setup was CPU-bound. On one machine the replicas share its cores, so the throughput
ratio says what running several costs or gains there (more sessions and claims
contending, more processes to spread the work over); CPU per delivery is the figure to
plan hosts with. The rounds repeat the setups (``--repeat``); medians are printed.

Failover: 3 replicas, one GitHub flow with its hook. ``kill -9`` of the leader (the
replica whose session holds the leader lock, the store's own query), then at once its
hook is deleted on the fake upstream, so that only a reconcile pass by another replica
brings it back ("vanished upstream": a create). Printed per kill: the time to a new
leader and the time until the hook is back; a new replica is started after each kill
(3 again). ``--failovers`` kills; min/median/max.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from bench_pipeline import PAYLOAD, burst, processed, tree_cpu  # noqa: E402

from hookd.callbacks.verify import sign  # noqa: E402
from tests import pgserver  # noqa: E402
from tests.fakes.github import Hook  # noqa: E402
from tests.ingest_launcher import connectors  # noqa: E402
from tests.test_daemon import wait_until  # noqa: E402
from tests.test_scaleout import Cluster, github_flow, running  # noqa: E402


@contextmanager
def cluster_on(server_url: str) -> Iterator[Cluster]:
    """A cluster (no replicas started yet) on a fresh database of `server_url`'s server;
    its directory (the replicas' logs) is kept when the setup fails."""
    url = pgserver.create_database(server_url)
    tmp = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    try:
        with running(tmp, url) as cluster:
            yield cluster
            # The replicas' worker processes, which must be gone before the next setup
            # is measured (they die with their replica, a moment after it).
            workers = [int(c) for r in cluster.replicas if r.proc.poll() is None
                       for c in Path(f"/proc/{r.proc.pid}/task/{r.proc.pid}/children")
                       .read_text().split()]
        wait_until(lambda: not any(Path(f"/proc/{w}").exists() for w in workers), 20,
                   "the replicas' worker processes to end")
        shutil.rmtree(tmp)
    finally:
        pgserver.drop_database(server_url, url)


def hook_of(cluster: Cluster, repo: str, other_than: int | None = None) -> Hook | None:
    """The fake GitHub's hook on `repo` (one whose id is not `other_than`), or None."""
    # list(): the fake's server thread adds hooks while this reads.
    return next((h for h in list(cluster.gh.hooks.values())
                 if h.repo == repo and h.id != other_than), None)


def throughput(server_url: str, replicas: int, n: int, connections: int,
               tag: str) -> dict[str, float]:
    """One setup of `replicas` replicas: its rates, ack p99 and CPU per delivery."""
    body = PAYLOAD.read_bytes()
    with cluster_on(server_url) as cluster:
        (cluster.config / "flows" / "push.yaml").write_text(github_flow("push", "bench"))
        started = cluster.start(replicas)
        hook = wait_until(lambda: hook_of(cluster, "bench"), 30, "the push flow's hook")
        path = urlsplit(hook.config["url"]).path
        headers = sign(connectors()["github"].verification, hook.config["secret"], body,
                       now=time.time())
        ports = [int(urlsplit(r.public).port or 0) for r in started]
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            # Warm-up: a delivery to each replica, run before the measurement starts.
            asyncio.run(burst(ports, path, headers, body, replicas, replicas, f"{tag}w"))
            wait_until(lambda: processed(conn)[0] >= replicas, 60, "the warm-up runs")
            base = processed(conn)
            server = pgserver.ServerCpu(server_url, cluster.url,
                                        exclude=[conn.info.backend_pid])
            cpu_before = sum(tree_cpu(r.proc.pid) for r in started)
            server.start()
            own_before = time.process_time()
            latencies: list[float] = []
            start, answered, ok = asyncio.run(burst(ports, path, headers, body, n,
                                                    connections, tag, latencies))
            if ok != n:
                raise SystemExit(f"{replicas} replicas answered {ok}/{n} with 2xx "
                                 f"(logs: {cluster.tmp})")
            deadline = time.monotonic() + 120 + n / 20
            while processed(conn)[0] < base[0] + n:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{replicas} replicas ran only "
                                     f"{processed(conn)[0] - base[0]} of {n}")
                time.sleep(0.05)
            end = time.perf_counter()
            server_cpu = server.stop()
            own_cpu = time.process_time() - own_before
            hookd_cpu = sum(tree_cpu(r.proc.pid) for r in started) - cpu_before
            counts = [now - before for now, before in zip(processed(conn), base, strict=True)]
        if counts != [n, n, n]:
            raise SystemExit(f"store check failed with {replicas} replicas: runs, deliveries "
                             f"done, steps = {counts}, expected {n} each")
    latencies.sort()
    return {"acked": n / (answered - start), "processed": n / (end - start),
            "p99": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "hookd_cpu": 1000 * hookd_cpu / n, "server_cpu": 1000 * server_cpu / n,
            "cores": (hookd_cpu + server_cpu) / (end - start), "load": own_cpu / (end - start)}


def failovers(server_url: str, kills: int) -> list[tuple[float, float]]:
    """(seconds to a new leader, seconds to the reconcile that restored the hook) of each
    `kill -9` of the leader of 3 replicas."""
    times: list[tuple[float, float]] = []
    with cluster_on(server_url) as cluster:
        (cluster.config / "flows" / "g.yaml").write_text(github_flow("g", "g"))
        cluster.start(3)
        hook = wait_until(lambda: hook_of(cluster, "g"), 30, "the flow's hook")
        for k in range(kills):
            leader = cluster.leader()
            leader.proc.send_signal(signal.SIGKILL)
            killed = time.perf_counter()
            # Deleted upstream while no replica leads: only the next leader's reconcile
            # pass can bring it back (nothing else writes hooks).
            cluster.gh.hooks.pop(hook.id)
            leader.proc.wait()
            cluster.balancer.backends.remove(leader.public)
            elected: float | None = None
            while (back := hook_of(cluster, "g", other_than=hook.id)) is None:
                if elected is None and cluster.leading() is not None:
                    elected = time.perf_counter() - killed
                if time.perf_counter() - killed > 60:
                    raise SystemExit(f"no reconcile within 60 s of killing the leader "
                                     f"(logs: {cluster.tmp})")
                time.sleep(0.01)
            restored = time.perf_counter() - killed
            # Found back before a poll saw the new leader: it was elected by then.
            elected = restored if elected is None else elected
            hook = back
            new = cluster.leader()
            assert new is not leader
            times.append((elected, restored))
            print(f"  kill {k + 1}: new leader after {elected:.2f} s, hook restored by its "
                  f"reconcile after {restored:.2f} s", flush=True)
            cluster.start(1)  # three replicas again for the next kill
    return times


def spread(values: list[float]) -> str:
    return (f"min {min(values):.2f} s, median {statistics.median(values):.2f} s, "
            f"max {max(values):.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--deliveries", "-n", type=int,
                        help="deliveries per setup (default 2000; --quick: 300)")
    parser.add_argument("--connections", "-c", type=int, default=32,
                        help="concurrent keep-alive connections, spread over the replicas")
    parser.add_argument("--replicas", default="1,2,3",
                        help="the setups, comma-separated (default 1,2,3; the first is the "
                             "ratios' baseline)")
    parser.add_argument("--repeat", type=int,
                        help="rounds of every setup (default 3; --quick: 1)")
    parser.add_argument("--failovers", type=int,
                        help="kills of the leader (default 5; --quick: 2; 0: none)")
    parser.add_argument("--store-url", default=os.environ.get("HOOKD_TEST_POSTGRES_URL"),
                        help="the PostgreSQL server (default $HOOKD_TEST_POSTGRES_URL); "
                             "each setup creates and drops a database of its own")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: smaller defaults (< 60 s)")
    args = parser.parse_args()
    if not args.store_url:
        parser.error("needs --store-url or $HOOKD_TEST_POSTGRES_URL "
                     "(export HOOKD_TEST_POSTGRES_URL=$(.ci/postgres), as root)")
    for name, full, quick in (("deliveries", 2000, 300), ("repeat", 3, 1), ("failovers", 5, 2)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    setups = [int(s) for s in args.replicas.split(",")]
    print(f"burst of {args.deliveries} signed {PAYLOAD.stat().st_size} B push payloads per "
          f"setup, {args.connections} connections round-robin over the replicas, "
          f"{args.repeat} rounds, {os.cpu_count()} cores", flush=True)
    rounds: list[dict[int, dict[str, float]]] = []
    for r in range(args.repeat):
        row = {n: throughput(args.store_url, n, args.deliveries, args.connections,
                             f"r{r}n{n}") for n in setups}
        rounds.append(row)
        for n, m in row.items():
            print(f"  round {r + 1}, {n} replica{'s' if n > 1 else ''}: acknowledged "
                  f"{m['acked']:.0f}/s (p99 {m['p99']:.1f} ms), processed "
                  f"{m['processed']:.0f}/s ({m['processed'] / row[setups[0]]['processed']:.2f}x "
                  f"{setups[0]}); CPU ms per delivery: hookd {m['hookd_cpu']:.2f}, "
                  f"PostgreSQL {m['server_cpu']:.2f}; busy cores: hookd + PostgreSQL "
                  f"{m['cores']:.2f}, load generator {m['load']:.2f}", flush=True)
    times = failovers(args.store_url, args.failovers) if args.failovers else []

    def mid(n: int, key: str) -> float:
        return statistics.median(row[n][key] for row in rounds)

    for n in setups:
        ratio = statistics.median(row[n]["processed"] / row[setups[0]]["processed"]
                                  for row in rounds)
        print(f"{n} replica{'s' if n > 1 else ''}: median processed {mid(n, 'processed'):.0f} "
              f"deliveries/s ({ratio:.2f}x {setups[0]}), acknowledged {mid(n, 'acked'):.0f}/s "
              f"(p99 {mid(n, 'p99'):.1f} ms); CPU per delivery: hookd "
              f"{mid(n, 'hookd_cpu'):.2f} ms, PostgreSQL {mid(n, 'server_cpu'):.2f} ms")
    if times:
        print(f"failover over {len(times)} kills of the leader: new leader "
              f"{spread([e for e, _ in times])}; reconciled by it {spread([r for _, r in times])} "
              f"(issue 17: a new leader within 15 s, a flow's hook within 20 s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
