"""Pipeline throughput: deliveries fully processed per second, hookd against adnanh/webhook.

    python bench/bench_pipeline.py [--deliveries 2000] [--connections 32] [--repeat 3]
                                   [--store sqlite|postgresql|both] [--store-url URL]

The same burst of signed 7 KB GitHub push payloads (``X-Hub-Signature-256``, a unique
``X-GitHub-Delivery`` each) is sent over keep-alive connections by one raw-socket load
generator to each server in turn, both real processes on 127.0.0.1:

- baseline: adnanh/webhook (Debian package ``webhook``; ``apt-get install webhook``), one
  hook with the trigger rule ``payload-hmac-sha256`` running ``/bin/true``, with
  ``include-command-output-in-response`` so each answer comes after the command ran —
  a burst is fully processed when the last answer arrives. webhook keeps nothing on disk.
- hookd: this script in ``--serve`` mode — `hookd.ingest.app` (route, token, HMAC, JSON,
  schema, dedup, durable group-commit inbox, 202) and the worker, the flow being one
  ``log`` step (hookd's JSON log lines go to a file, as to the journal). A burst is fully
  processed when every delivery is ``done`` and has a ``succeeded`` run in the store —
  every delivery and every run (with its step) is on disk.

Each round runs webhook, hookd (worker in the listener's process), hookd (worker in a
child process, `hookd.runs.worker_process`), the pipeline alone, then webhook again; ratios
are taken against the mean of the round's two webhook runs (the machine's load drifts)
and the medians over ``--repeat`` rounds are printed with the goal (≥ 1.0, stretch 1.5).
Every hookd run is checked in the store: N deliveries done, N runs and N steps
succeeded. "Pipeline alone" is N deliveries pre-recorded in the store, then drained by
the worker: the worker's cost apart from HTTP ingest. ``BENCH_WORKERS`` sets hookd's
global worker limit (default 8, hookd's default).

``--store postgresql`` runs the hookd setups on a PostgreSQL store instead (``both``: on
SQLite and on PostgreSQL in each round, and the ratios PostgreSQL/SQLite); the server is
``--store-url`` or ``$HOOKD_TEST_POSTGRES_URL``, each run on a database of its own (created
before, dropped after). The PostgreSQL server's CPU per delivery is printed beside hookd's
(`tests.pgserver.ServerCpu`: the processes that work for that database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PAYLOAD = REPO / "tests" / "data" / "pipeline" / "push.json"
SECRET_FOR_WEBHOOK = "bench-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


# --------------------------------------------------------------------------- CPU


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and its live children."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def stop_and_cpu(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> float:
    """Stop `proc` with `sig` and reap it; returns CPU seconds of it and every descendant
    it waited for (its workers, webhook's /bin/true children)."""
    proc.send_signal(sig)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        time.sleep(0.02)


# --------------------------------------------------------------------------- load


async def burst(port: int | Sequence[int], path: str, headers: dict[str, str], body: bytes,
                n: int, connections: int, tag: str,
                latencies: list[float] | None = None) -> tuple[float, float, int]:
    """Send `n` POSTs over `connections` keep-alive connections; returns (start, end of
    the last answer, number of 2xx answers). Several ports: the connections go to them
    round-robin, as a load balancer spreads them over replicas. `latencies` gets each
    answer's time in seconds."""
    ports = [port] if isinstance(port, int) else list(port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    counter = iter(range(n))
    ok = 0

    async def one_connection(port: int) -> None:
        nonlocal ok
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                sent = time.perf_counter()
                request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                           f"X-GitHub-Event: push\r\nX-GitHub-Delivery: {tag}-{i}\r\n{head}\r\n")
                writer.write(request.encode() + body)
                status_line = await reader.readline()
                length = 0
                chunked = False
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "transfer-encoding" and "chunked" in value:
                        chunked = True
                if chunked:
                    while True:
                        size = int((await reader.readline()).strip(), 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                elif length:
                    await reader.readexactly(length)
                if latencies is not None:
                    latencies.append(time.perf_counter() - sent)
                if status_line.split()[1].startswith(b"2"):
                    ok += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one_connection(ports[c % len(ports)]) for c in range(connections)))
    return start, time.perf_counter(), ok


# --------------------------------------------------------------------------- webhook


def run_webhook(tmp: Path, n: int, connections: int, tag: str) -> tuple[float, float]:
    """Deliveries/s and CPU milliseconds per delivery (webhook and its /bin/true runs)."""
    exe = shutil.which("webhook")
    if exe is None:
        raise SystemExit("adnanh/webhook is not installed: apt-get install -y webhook")
    hooks = [{
        "id": "push",
        "execute-command": "/bin/true",
        "include-command-output-in-response": True,
        "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": SECRET_FOR_WEBHOOK,
                                   "parameter": {"source": "header",
                                                 "name": "X-Hub-Signature-256"}}},
    }]
    (tmp / "hooks.json").write_text(json.dumps(hooks))
    port = free_port()
    proc = subprocess.Popen([exe, "-hooks", str(tmp / "hooks.json"), "-ip", "127.0.0.1",
                             "-port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        from hookd.callbacks.verify import sign
        from tests.ingest_launcher import connectors

        body = PAYLOAD.read_bytes()
        headers = sign(connectors()["github"].verification, SECRET_FOR_WEBHOOK, body, now=0)
        cpu_before = tree_cpu(proc.pid)
        start, end, ok = asyncio.run(burst(port, "/hooks/push", headers, body, n,
                                           connections, tag))
        if ok != n:
            raise SystemExit(f"webhook answered {ok}/{n} with 2xx")
        cpu = stop_and_cpu(proc, signal.SIGTERM, 10) - cpu_before
        return n / (end - start), 1000 * cpu / n
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- hookd


def pipeline_config(state: Path, port: int, store: str) -> Any:
    """The benchmark's config: the push flow of one `log` step, hookd's worker limit."""
    from tests.ingest_launcher import make_config, store_setting, with_log_step

    return with_log_step(make_config(state, f"http://127.0.0.1:{port}",
                                     workers=int(os.environ.get("BENCH_WORKERS", "8")),
                                     store=store_setting(store)))


def serve(state: Path, port: int, process: bool = False, store: str = "sqlite") -> None:
    """The hookd process: callback server + worker, one flow of one `log` step; the store
    started on uvicorn's loop (`tests.ingest_launcher.Launched`)."""
    import contextlib

    import uvicorn

    from hookd.telemetry import logs
    from tests.ingest_launcher import Launched

    # One JSON line per event on stderr (the benchmark sends it to a file), like the
    # journal under systemd; the `log` step writes there too.
    logs.configure("json", "info")
    launched = Launched(pipeline_config(state, port, store), None,
                        "process" if process else "inline")
    server_config = uvicorn.Config(launched, host="127.0.0.1", port=port,
                                   log_level="warning", access_log=False, lifespan="off")
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT that stopped it
        launched.server(server_config).run()


COUNTS = ("SELECT count(*) FROM runs WHERE status = 'succeeded'",
          "SELECT count(*) FROM deliveries WHERE status = 'done'",
          "SELECT count(*) FROM run_steps WHERE status = 'succeeded'")


def processed(where: Any) -> tuple[int, int, int]:
    """(runs succeeded, deliveries done, steps succeeded) in the SQLite file `where` or
    on the PostgreSQL connection `where`."""
    if not isinstance(where, Path):
        rows = [where.execute(q).fetchone() for q in COUNTS]
    else:
        conn = sqlite3.connect(where, timeout=30)
        try:
            rows = [conn.execute(q).fetchone() for q in COUNTS]
        finally:
            conn.close()
    runs, done, steps = (int(r[0]) if r else 0 for r in rows)
    return runs, done, steps


class Database:
    """Where one hookd run keeps its state: the SQLite file in `state`, or a fresh
    PostgreSQL database (its URL in the launcher's environment variable) dropped after."""

    def __init__(self, store: str, state: Path, server_url: str | None) -> None:
        self.store, self.state, self.server_url = store, state, server_url
        self.url: str | None = None
        self.cpu: Any = None
        self.conn: Any = None  # one session for the progress polls (no fork per poll)

    def __enter__(self) -> Database:
        from tests import pgserver
        from tests.ingest_launcher import STORE_URL_ENV

        if self.store == "postgresql":
            assert self.server_url is not None
            self.url = pgserver.create_database(self.server_url)
            os.environ[STORE_URL_ENV] = self.url  # hookd and its worker inherit it
            import psycopg

            self.conn = psycopg.connect(self.url, autocommit=True)
            self.cpu = pgserver.ServerCpu(self.server_url, self.url,
                                          exclude=[self.conn.info.backend_pid])
        return self

    def __exit__(self, *exc: object) -> None:
        from tests import pgserver
        from tests.ingest_launcher import STORE_URL_ENV

        if self.conn is not None:
            self.conn.close()
        if self.url is not None and self.server_url is not None:
            os.environ.pop(STORE_URL_ENV, None)
            pgserver.drop_database(self.server_url, self.url)

    @property
    def where(self) -> Any:
        """What `processed` counts in: the PostgreSQL session, or the SQLite file."""
        from hookd.store.sqlite.db import DB_NAME

        return self.conn if self.conn is not None else self.state / DB_NAME


def run_hookd(tmp: Path, n: int, connections: int, tag: str,
              process: bool = False, store: str = "sqlite",
              server_url: str | None = None) -> tuple[float, float, float]:
    """Deliveries/s, CPU milliseconds per delivery (hookd and its worker process) and
    the PostgreSQL server's CPU milliseconds per delivery (0 on SQLite)."""
    from hookd.callbacks.verify import sign
    from hookd.store.sqlite.db import open_db
    from tests.ingest_launcher import store_server_secret, subscription

    state = tmp / "state"
    state.mkdir()
    port = free_port()
    with Database(store, state, server_url) as db:
        config = pipeline_config(state, port, store)
        secret = None
        if store == "sqlite":
            open_db(state).close()
        else:
            secret = store_server_secret(config)  # migrates the new database too
        target = subscription(config, state, "push", secret)
        log = (tmp / "hookd.log").open("wb")
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(state), "--port",
                                 str(port), "--store", store,
                                 *(["--process"] if process else [])], stderr=log)
        try:
            wait_listening(port)
            body = PAYLOAD.read_bytes()
            headers = sign(target.verification, target.secret, body, now=time.time())
            time.sleep(1.0)  # let the worker process (if any) finish starting
            cpu_before = tree_cpu(proc.pid)
            if db.cpu is not None:
                db.cpu.start()
            start, end_answers, ok = asyncio.run(burst(port, target.path, headers, body, n,
                                                       connections, tag))
            if ok != n:
                raise SystemExit(f"hookd answered {ok}/{n} with 2xx")
            deadline = time.monotonic() + 120
            while processed(db.where)[0] < n:
                if time.monotonic() > deadline:
                    raise SystemExit(f"hookd processed only {processed(db.where)} of {n}")
                time.sleep(0.005 if store == "sqlite" else 0.05)
            end = time.perf_counter()
            server_cpu = db.cpu.stop() if db.cpu is not None else 0.0
            runs, done, steps = processed(db.where)
            if (runs, done, steps) != (n, n, n):
                raise SystemExit(f"store check failed: runs={runs} done={done} steps={steps}, n={n}")
            on = "" if store == "sqlite" else f" on {store}"
            print(f"  hookd{on}{' (worker process)' if process else ''}: answers "
                  f"{n / (end_answers - start):.0f}/s, processed "
                  f"{n / (end - start):.0f}/s; store: {done} deliveries done, {runs} runs "
                  f"succeeded, {steps} steps", flush=True)
            cpu = stop_and_cpu(proc, signal.SIGINT, 30) - cpu_before
            return n / (end - start), 1000 * cpu / n, 1000 * server_cpu / n
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
            log.close()


def run_worker_only(tmp: Path, n: int, store: str = "sqlite",
                    server_url: str | None = None) -> float:
    """The pipeline alone: N deliveries already in the inbox (recorded in one transaction,
    as the inbox would), then the worker takes them, runs the one-`log`-step flow and
    records each run. Shows what the pipeline costs apart from HTTP ingest."""
    from hookd import store as stores
    from hookd.runs.worker import Worker
    from hookd.store.sqlite.db import open_db
    from hookd.store.sqlite.deliveries import DeliveryStore, NewDelivery

    state = tmp / "state"
    config = pipeline_config(state, 1, store)
    body = PAYLOAD.read_bytes()
    new = [NewDelivery("sub", "push", time.time(), {"x-github-event": "push"}, body, "push")
           for _ in range(n)]
    state.mkdir(parents=True, exist_ok=True)
    logging.getLogger("hookd.flow").addHandler(logging.FileHandler(state / "flow.log"))
    logging.getLogger("hookd.flow").setLevel(logging.INFO)
    logging.getLogger("hookd.flow").propagate = False

    async def record() -> None:
        inbox = stores.open(config.settings, role="cli")
        await inbox.start()
        try:
            await inbox.inbox.record(new)
        finally:
            await inbox.aclose()

    async def go() -> float:
        worker = Worker(lambda: config, poll_interval=0.01)
        start = time.perf_counter()
        await worker.start()
        await worker.idle(300)
        took = time.perf_counter() - start
        await worker.stop(10)
        return took

    with Database(store, state, server_url) as db:
        if store == "sqlite":
            conn = open_db(state)
            DeliveryStore(conn).record_many(new)
            conn.close()
        else:
            asyncio.run(record())
        took = asyncio.run(go())
        runs, done, steps = processed(db.where)
    if (runs, done, steps) != (n, n, n):
        raise SystemExit(f"store check failed: runs={runs} done={done} steps={steps}, n={n}")
    return n / took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--deliveries", "-n", type=int, default=2000)
    parser.add_argument("--connections", "-c", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="sqlite",
                        help="hookd's store (both: SQLite and PostgreSQL in each round)")
    parser.add_argument("--store-url", default=os.environ.get("HOOKD_TEST_POSTGRES_URL"),
                        help="the PostgreSQL server (default $HOOKD_TEST_POSTGRES_URL); "
                             "each run creates and drops a database of its own")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.process, args.store)
        return 0
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    if "postgresql" in stores and not args.store_url:
        parser.error("--store postgresql needs --store-url or $HOOKD_TEST_POSTGRES_URL "
                     "(export HOOKD_TEST_POSTGRES_URL=$(.ci/postgres), as root)")
    print(f"burst of {args.deliveries} signed {PAYLOAD.stat().st_size} B push payloads, "
          f"{args.connections} connections, {args.repeat} rounds", flush=True)
    # Each round brackets the hookd runs between two webhook runs and compares them with
    # the mean of the two: on a shared machine the load drifts between runs, and a ratio
    # taken within one round is far steadier than one taken across rounds.
    rows: list[dict[str, float]] = []
    for r in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp_name:
            tmp = Path(tmp_name)
            row: dict[str, float] = {}
            wa, wa_cpu = run_webhook(_dir(tmp, "webhook-a"), args.deliveries,
                                     args.connections, f"wa{r}")
            for store in stores:
                # SQLite's keys as they always were; PostgreSQL's with a "pg_" prefix.
                key = "" if store == "sqlite" else "pg_"
                on = "" if store == "sqlite" else "-pg"
                for name, process in (("hookd", False), ("process", True)):
                    rate, cpu, server = run_hookd(
                        _dir(tmp, f"{'hookd-process' if process else 'hookd'}{on}"),
                        args.deliveries, args.connections, f"{name[0]}{on}{r}",
                        process=process, store=store, server_url=args.store_url)
                    row |= {f"{key}{name}": rate, f"{key}{name}_cpu": cpu,
                            f"{key}{name}_server_cpu": server}
                row[f"{key}worker"] = run_worker_only(_dir(tmp, f"worker{on}"),
                                                      args.deliveries, store, args.store_url)
            wb, wb_cpu = run_webhook(_dir(tmp, "webhook-b"), args.deliveries,
                                     args.connections, f"wb{r}")
            base = (wa + wb) / 2
            row |= {"webhook": base, "webhook_cpu": (wa_cpu + wb_cpu) / 2}
            rows.append(row)
            for store in stores:
                print(round_line(r + 1, wa, wb, row, store), flush=True)

    def median(key: str) -> float:
        return statistics.median(row[key] / row["webhook"] for row in rows)

    def verdict(ratio: float) -> str:
        return "stretch met" if ratio >= 1.5 else "goal met" if ratio >= 1.0 else "BELOW GOAL"

    print(f"adnanh/webhook: median {statistics.median(r['webhook'] for r in rows):.0f} "
          "deliveries/s (nothing kept on disk)")
    if "sqlite" in stores:
        for key, label in (("hookd", "hookd (worker in the listener's process)"),
                           ("process", "hookd (worker in a child process)")):
            ratio = median(key)
            print(f"{label}: median {statistics.median(r[key] for r in rows):.0f} deliveries/s, "
                  f"every delivery and run on disk; ratio {ratio:.2f}x "
                  f"(goal >= 1.0x, stretch 1.5x): {verdict(ratio)}")
        cpu = {k: statistics.median(r[k] for r in rows)
               for k in ("webhook_cpu", "hookd_cpu", "process_cpu")}
        print(f"CPU per delivery (load-independent; includes child processes): webhook "
              f"{cpu['webhook_cpu']:.2f} ms, hookd {cpu['hookd_cpu']:.2f} ms "
              f"({cpu['webhook_cpu'] / cpu['hookd_cpu']:.2f}x webhook's efficiency), hookd with "
              f"worker process {cpu['process_cpu']:.2f} ms")
        print(f"pipeline alone (no HTTP ingest): median "
              f"{statistics.median(r['worker'] for r in rows):.0f} deliveries/s, "
              f"{median('worker'):.2f}x webhook")
    if "postgresql" in stores:
        def mid(key: str) -> float:
            return statistics.median(r[key] for r in rows)

        for key, label in (("pg_hookd", "hookd on PostgreSQL (worker in the listener's process)"),
                           ("pg_process", "hookd on PostgreSQL (worker in a child process)")):
            print(f"{label}: median {mid(key):.0f} deliveries/s, ratio {median(key):.2f}x "
                  f"webhook; CPU per delivery: hookd {mid(key + '_cpu'):.2f} ms, PostgreSQL "
                  f"server {mid(key + '_server_cpu'):.2f} ms")
        print(f"pipeline alone on PostgreSQL: median {mid('pg_worker'):.0f} deliveries/s, "
              f"{median('pg_worker'):.2f}x webhook")
    if len(stores) == 2:
        for key, label in (("hookd", "worker in the listener's process"),
                           ("process", "worker in a child process"),
                           ("worker", "pipeline alone")):
            ratio = statistics.median(r[f"pg_{key}"] / r[key] for r in rows)
            print(f"PostgreSQL/SQLite ({label}): median {ratio:.2f}x")
    return 0


def round_line(n: int, wa: float, wb: float, row: dict[str, float], store: str) -> str:
    """One round's figures for `store` (SQLite's line as it always was)."""
    key = "" if store == "sqlite" else "pg_"
    base = row["webhook"]
    hk, hp, wk = row[f"{key}hookd"], row[f"{key}process"], row[f"{key}worker"]

    def cpu(name: str) -> str:
        own = f"{row[f'{key}{name}_cpu']:.2f}"
        return own if store == "sqlite" else f"{own} + PostgreSQL {row[f'{key}{name}_server_cpu']:.2f}"

    return (f"  round {n}{'' if store == 'sqlite' else ' on PostgreSQL'}: webhook {wa:.0f}/s "
            f"and {wb:.0f}/s (fully processed: answered after /bin/true ran); hookd "
            f"{hk:.0f}/s ({hk / base:.2f}x); hookd with worker process {hp:.0f}/s "
            f"({hp / base:.2f}x); pipeline alone {wk:.0f}/s ({wk / base:.2f}x); CPU ms per "
            f"delivery: webhook {row['webhook_cpu']:.2f}, hookd {cpu('hookd')}, "
            f"hookd+worker process {cpu('process')}")


def _dir(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    return tmp / name


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
