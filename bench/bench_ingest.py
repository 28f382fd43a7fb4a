"""Ingest throughput: hookd's durable callback path against a bare HMAC-checking app.

    python bench/bench_ingest.py [--duration 10] [--connections 32] [--window 0]
                                 [--profile py-spy] [--worker none|inline|process]
                                 [--store sqlite|postgresql|both] [--store-url URL]

Both servers are real uvicorn processes on 127.0.0.1 (tests/ingest_launcher.py), driven by
wrk with a Lua script that POSTs the 7 KB GitHub push payload with a valid
``X-Hub-Signature-256`` and a unique ``X-GitHub-Delivery`` per request:

- baseline: a starlette app that reads the body, checks the HMAC and answers 202;
- hookd:    `hookd.ingest.app` — route + token check, HMAC, JSON parse, schema validation,
            dedup lookup, durable record through the group-commit inbox (SQLite WAL,
            synchronous=FULL: fsync before the answer), 202 with the delivery id.

``--store postgresql`` measures hookd on a PostgreSQL store instead (``both``: SQLite and
PostgreSQL in each round, and the ratio PostgreSQL/SQLite: goal ≥ 0.5 with p99 < 50 ms,
issue 17). The server is ``--store-url`` or ``$HOOKD_TEST_POSTGRES_URL`` (``.ci/postgres``
starts the machine's and prints one); each run gets a database of its own, created before
and dropped after. The PostgreSQL server's CPU per request is printed beside hookd's: the
server processes that work for that database (its sessions, the WAL writer, checkpointer
and other background processes), from /proc, over the load.

``--worker inline|process`` also runs hookd's pipeline worker (in the listener's process,
or in a child, as ``worker.mode`` in hookd.yaml chooses), the push flow being one ``log``
step: the listener's numbers while deliveries are being processed.

Prints both requests/s, the ratio (goal ≥ 0.6), p50/p99 latency (goal p99 < 50 ms),
non-2xx answers, each server's CPU milliseconds per request (all its threads: less
sensitive to other load on the machine than requests/s), the inbox's commits and batch sizes, and checks that every 2xx answer
is in the store. Without wrk (Debian package ``wrk``) a Python load generator is used;
its numbers are lower for both, the ratio is still meaningful.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hookd.callbacks.verify import sign  # noqa: E402
from tests.ingest_launcher import (  # noqa: E402
    DATA,
    STORE_URL_ENV,
    make_config,
    store_server_secret,
    store_setting,
    subscription,
    wait_listening,
)

PAYLOAD = DATA / "github" / "push.0.json"

LUA = r"""
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end
function init(args)
  local f = io.open("%(payload)s", "rb")
  body = f:read("*all")
  f:close()
end
function request()
  counter = counter + 1
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["X-GitHub-Event"] = "push"
  headers["X-Hub-Signature-256"] = "%(signature)s"
  headers["X-GitHub-Delivery"] = "bench-" .. tid .. "-" .. counter .. "-%(run)s"
  return wrk.format("POST", "%(path)s", headers, body)
end
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(mode: str, state: Path, port: int, extra: list[str],
          name: str | None = None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(REPO / "tests" / "ingest_launcher.py"), "--state", str(state),
           "--port", str(port), "--mode", mode, *extra]
    state.mkdir(parents=True, exist_ok=True)
    with open(state.parent / f"{name or mode}.log", "wb") as log:  # a file: a pipe could fill and block
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    wait_listening(port)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_wrk(port: int, path: str, signature: str, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA % {"payload": PAYLOAD, "signature": signature, "path": path, "run": tag})
        script = f.name
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out = subprocess.run(
            ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
             "--latency", "-s", script, f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        os.unlink(script)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = parse_wrk(out)
    # wrk's own CPU: with it, whether the machine's cores were all busy (then requests/s
    # follow the server's CPU per request) or the server was waiting.
    result["wrk_cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out: str) -> dict[str, Any]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    # The percentile lines of --latency ("     50%    3.21ms"), not "71.50%" in Req/Sec.
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "requests": total, "p50": p50, "p99": p99,
            "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else ""}


async def _py_load(port: int, path: str, signature: str, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """Fallback load generator (httpx), used only when wrk is not installed."""
    import httpx

    body = PAYLOAD.read_bytes()
    latencies: list[float] = []
    bad = 0
    deadline = time.monotonic() + args.duration

    async def worker(n: int, client: httpx.AsyncClient) -> None:
        nonlocal bad
        i = 0
        while time.monotonic() < deadline:
            i += 1
            headers = {"content-type": "application/json", "x-github-event": "push",
                       "x-hub-signature-256": signature, "x-github-delivery": f"py-{n}-{i}-{tag}"}
            t = time.perf_counter()
            r = await client.post(path, content=body, headers=headers)
            latencies.append(time.perf_counter() - t)
            bad += not (200 <= r.status_code < 300)

    limits = httpx.Limits(max_connections=args.connections)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:
        started = time.monotonic()
        await asyncio.gather(*(worker(n, client) for n in range(args.connections)))
        elapsed = time.monotonic() - started
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "requests": len(latencies),
            "p50": latencies[len(latencies) // 2] * 1000, "p99": latencies[int(len(latencies) * 0.99)] * 1000,
            "non2xx": bad, "socket_errors": ""}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) and of its live children
    (the worker process) so far; 0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(_cpu_seconds(int(child)) for child in children)


def _thread_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process's main thread (hookd's event loop); 0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def measure(mode: str, root: Path, args: argparse.Namespace, extra: list[str],
            round_: int = 0, store: str = "sqlite") -> dict[str, Any]:
    """One run of `mode` (bare, or hookd on `store`), its numbers and what it recorded."""
    if store == "sqlite":
        return _measure(mode, root, args, extra, round_)
    from tests import pgserver

    database = pgserver.create_database(args.store_url)
    os.environ[STORE_URL_ENV] = database  # the launcher (and its worker) inherit it
    try:
        cpu = pgserver.ServerCpu(args.store_url, database)
        result = _measure(mode, root, args, [*extra, "--store", store], round_, store, cpu)
        import psycopg

        with psycopg.connect(database) as conn:
            row = conn.execute("SELECT count(*) FROM deliveries").fetchone()
        result["recorded"] = int(row[0]) if row else 0
        return result
    finally:
        os.environ.pop(STORE_URL_ENV, None)
        pgserver.drop_database(args.store_url, database)


def _measure(mode: str, root: Path, args: argparse.Namespace, extra: list[str],
             round_: int = 0, store: str = "sqlite", server: Any = None) -> dict[str, Any]:
    name = mode if store == "sqlite" else f"{mode}-{store}"
    state = root / f"{name}-{round_}"
    port = _free_port()
    config = make_config(state, f"http://127.0.0.1:{port}", store=store_setting(store))
    secret = store_server_secret(config) if store != "sqlite" else None
    target = subscription(config, state, "push", secret)
    signature = sign(target.verification, target.secret, PAYLOAD.read_bytes(), now=0)["X-Hub-Signature-256"]
    # Start from a quiet machine: the previous run's dirty pages written back, so that
    # the kernel's writeback does not run during this one.
    os.sync()
    time.sleep(1.0)
    proc = start(mode, state, port, extra, name)
    profiler = None
    try:
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if args.profile == "py-spy" and mode == "hookd" and spy:
            profiler = subprocess.Popen(
                [spy, "record", "-p", str(proc.pid), "-d", str(args.duration), "-f", "speedscope",
                 "-o", str(root / f"{name}.speedscope.json"), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tag = str(int(time.time()))
        cpu_before = _cpu_seconds(proc.pid)  # after start-up (imports, migrations)
        loop_before = _thread_cpu_seconds(proc.pid)
        if server is not None:
            server.start()
        if shutil.which("wrk"):
            result = run_wrk(port, target.path, signature, args, tag)
        else:
            result = asyncio.run(_py_load(port, target.path, signature, args, tag))
        result["cpu"] = _cpu_seconds(proc.pid) - cpu_before
        result["loop_cpu"] = _thread_cpu_seconds(proc.pid) - loop_before
        if server is not None:
            result["server_cpu"] = server.stop()
    finally:
        if profiler is not None:
            profiler.wait()
        stop(proc)
    stats = re.search(r"inbox: .*", (state.parent / f"{name}.log").read_text())
    result["inbox"] = stats.group(0) if stats else ""
    if mode == "hookd" and store == "sqlite":
        conn = sqlite3.connect(state / "hookd.db")
        result["recorded"] = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        conn.close()
    return result


LABELS = {"sqlite": "hookd durable ingest", "postgresql": "hookd on PostgreSQL"}


def report(name: str, r: dict[str, Any], duration: int) -> None:
    """One run's line: req/s, latency, CPU per request (and the PostgreSQL server's)."""
    per = 1000 / max(r["requests"], 1)
    server = f"  PostgreSQL CPU {per * r['server_cpu']:.3f} ms/req" if "server_cpu" in r else ""
    print(f"  {name:24s} {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms"
          f"  p99 {r['p99']:6.2f} ms  non-2xx {r['non2xx']}"
          f"  CPU {per * r['cpu']:.3f} ms/req"
          f" (loop {per * r['loop_cpu']:.3f}){server}"
          f"  busy cores {(r['cpu'] + r.get('server_cpu', 0.0) + r.get('wrk_cpu', 0.0)) / duration:.2f}"
          f" (wrk {r.get('wrk_cpu', 0.0) / duration:.2f})"
          f"  {r['socket_errors']}")


def main() -> int:
    parser = argparse.ArgumentParser(description="hookd durable ingest vs a bare HMAC app")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=float, default=None, help="inbox group-commit window (s)")
    parser.add_argument("--loop", default="auto", help="uvicorn --loop for both servers")
    parser.add_argument("--http", default="auto", help="uvicorn --http for both servers")
    parser.add_argument("--profile", choices=["py-spy", "none"], default="none")
    parser.add_argument("--worker", choices=["inline", "process", "none"], default="none",
                        help="also run the pipeline worker (push flow: one log step)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of bare + hookd; the ratio reported is the median")
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="sqlite",
                        help="hookd's store (both: SQLite and PostgreSQL in each round)")
    parser.add_argument("--store-url", default=os.environ.get("HOOKD_TEST_POSTGRES_URL"),
                        help="the PostgreSQL server (default $HOOKD_TEST_POSTGRES_URL); "
                             "each run creates and drops a database of its own")
    args = parser.parse_args()
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    if "postgresql" in stores and not args.store_url:
        parser.error("--store postgresql needs --store-url or $HOOKD_TEST_POSTGRES_URL "
                     "(export HOOKD_TEST_POSTGRES_URL=$(.ci/postgres), as root)")

    common = ["--loop", args.loop, "--http", args.http]
    hookd_extra = [*common, *(["--worker", args.worker] if args.worker != "none" else [])]
    # The group-commit window is the SQLite inbox's (PostgreSQL's batches need none).
    window = ["--window", str(args.window)] if args.window is not None else []
    load = "wrk" if shutil.which("wrk") else "python (httpx)"
    print(f"load: {load}, {args.connections} connections, {args.duration}s, "
          f"payload {PAYLOAD.stat().st_size} bytes, signed; {args.repeat} rounds, "
          f"{os.cpu_count()} cores")
    rounds: list[tuple[dict[str, Any], dict[str, dict[str, Any]]]] = []
    lost = False
    with tempfile.TemporaryDirectory(prefix="hookd-bench-") as tmp:
        root = Path(tmp)
        for n in range(args.repeat):
            bare = measure("bare", root / str(n), args, common, n)
            hookd = {store: measure("hookd", root / str(n), args,
                                    [*hookd_extra, *(window if store == "sqlite" else [])],
                                    n, store)
                     for store in stores}
            rounds.append((bare, hookd))
            print(f"round {n + 1}:")
            report("bare starlette + HMAC", bare, args.duration)
            for store, r in hookd.items():
                report(LABELS[store], r, args.duration)
            for store, r in hookd.items():
                print(f"  {r['inbox']}")
                ok = r["requests"] - r["non2xx"]
                fine = r["recorded"] >= ok
                lost = lost or not fine
                on = "" if store == "sqlite" else f" ({store})"
                print(f"  ratio{on} {r['rps'] / bare['rps'] if bare['rps'] else 0.0:.2f};"
                      f" 2xx answers {ok}, deliveries recorded {r['recorded']}"
                      f" ({'OK: every 2xx is recorded' if fine else 'LOST DELIVERIES'})")
            if len(hookd) == 2 and hookd["sqlite"]["rps"]:
                print(f"  PostgreSQL/SQLite {hookd['postgresql']['rps'] / hookd['sqlite']['rps']:.2f}")
        if args.profile == "py-spy":
            for store in stores:
                name = "hookd" if store == "sqlite" else f"hookd-{store}"
                if (root / "0" / f"{name}.speedscope.json").exists():
                    suffix = "" if store == "sqlite" else f"-{store}"
                    dest = Path(tempfile.gettempdir()) / f"hookd-ingest{suffix}.speedscope.json"
                    shutil.copy(root / "0" / f"{name}.speedscope.json", dest)
                    print(f"profile: {dest} (open in https://www.speedscope.app)")
                else:
                    print("profile: py-spy not found or not permitted (pip install py-spy)")

    for store in stores:
        ratios = sorted(h[store]["rps"] / b["rps"] for b, h in rounds if b["rps"])
        ratio = statistics.median(ratios) if ratios else 0.0
        p99 = statistics.median(h[store]["p99"] for _, h in rounds)
        if store == "sqlite":
            print(f"median ratio hookd/bare: {ratio:.2f} (goal >= 0.60; rounds "
                  f"{', '.join(f'{r:.2f}' for r in ratios)})   median hookd p99: {p99:.1f} ms (goal < 50)")
        else:
            print(f"PostgreSQL: median ratio hookd/bare {ratio:.2f} (rounds "
                  f"{', '.join(f'{r:.2f}' for r in ratios)}), median "
                  f"{statistics.median(h[store]['rps'] for _, h in rounds):.0f} req/s, "
                  f"median p99 {p99:.1f} ms (goal < 50); CPU per delivery: hookd "
                  f"{_median_ms(rounds, store, 'cpu'):.3f} ms, PostgreSQL server "
                  f"{_median_ms(rounds, store, 'server_cpu'):.3f} ms")
    if len(stores) == 2:
        pg = sorted(h["postgresql"]["rps"] / h["sqlite"]["rps"] for _, h in rounds
                    if h["sqlite"]["rps"])
        pg_p99 = statistics.median(h["postgresql"]["p99"] for _, h in rounds)
        met = bool(pg) and statistics.median(pg) >= 0.5 and pg_p99 < 50
        verdict = "goal met" if met else "BELOW GOAL"
        print(f"median ratio PostgreSQL/SQLite: {statistics.median(pg) if pg else 0.0:.2f} "
              f"(goal >= 0.50 with p99 < 50 ms: {verdict}; rounds "
              f"{', '.join(f'{r:.2f}' for r in pg)})")
    return 1 if lost else 0


def _median_ms(rounds: list[tuple[dict[str, Any], dict[str, dict[str, Any]]]], store: str,
               key: str) -> float:
    """The median over `rounds` of `key` (CPU seconds) per request of hookd on `store`, ms."""
    return statistics.median(1000 * h[store][key] / max(h[store]["requests"], 1)
                             for _, h in rounds)


if __name__ == "__main__":
    raise SystemExit(main())
