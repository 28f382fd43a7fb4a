"""Ingest throughput: hookd's durable callback path against a bare HMAC-checking app.

    python bench/bench_ingest.py [--duration 10] [--connections 32] [--window 0]
                                 [--profile py-spy] [--worker none|inline|process]

Both servers are real uvicorn processes on 127.0.0.1 (tests/ingest_launcher.py), driven by
wrk with a Lua script that POSTs the 7 KB GitHub push payload with a valid
``X-Hub-Signature-256`` and a unique ``X-GitHub-Delivery`` per request:

- baseline: a starlette app that reads the body, checks the HMAC and answers 202;
- hookd:    `hookd.ingest.app` — route + token check, HMAC, JSON parse, schema validation,
            dedup lookup, durable record through the group-commit inbox (SQLite WAL,
            synchronous=FULL: fsync before the answer), 202 with the delivery id.

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
from tests.ingest_launcher import DATA, make_config, subscription, wait_listening  # noqa: E402

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


def start(mode: str, state: Path, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(REPO / "tests" / "ingest_launcher.py"), "--state", str(state),
           "--port", str(port), "--mode", mode, *extra]
    state.mkdir(parents=True, exist_ok=True)
    with open(state.parent / f"{mode}.log", "wb") as log:  # a file: a pipe could fill and block
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
            round_: int = 0) -> dict[str, Any]:
    state = root / f"{mode}-{round_}"
    port = _free_port()
    config = make_config(state, f"http://127.0.0.1:{port}")
    target = subscription(config, state, "push")
    signature = sign(target.verification, target.secret, PAYLOAD.read_bytes(), now=0)["X-Hub-Signature-256"]
    # Start from a quiet machine: the previous run's dirty pages written back, so that
    # the kernel's writeback does not run during this one.
    os.sync()
    time.sleep(1.0)
    proc = start(mode, state, port, extra)
    profiler = None
    try:
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if args.profile == "py-spy" and mode == "hookd" and spy:
            profiler = subprocess.Popen(
                [spy, "record", "-p", str(proc.pid), "-d", str(args.duration), "-f", "speedscope",
                 "-o", str(root / "hookd.speedscope.json"), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tag = str(int(time.time()))
        cpu_before = _cpu_seconds(proc.pid)  # after start-up (imports, migrations)
        loop_before = _thread_cpu_seconds(proc.pid)
        if shutil.which("wrk"):
            result = run_wrk(port, target.path, signature, args, tag)
        else:
            result = asyncio.run(_py_load(port, target.path, signature, args, tag))
        result["cpu"] = _cpu_seconds(proc.pid) - cpu_before
        result["loop_cpu"] = _thread_cpu_seconds(proc.pid) - loop_before
    finally:
        if profiler is not None:
            profiler.wait()
        stop(proc)
    stats = re.search(r"inbox: .*", (state.parent / f"{mode}.log").read_text())
    result["inbox"] = stats.group(0) if stats else ""
    if mode == "hookd":
        conn = sqlite3.connect(state / "hookd.db")
        result["recorded"] = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        conn.close()
    return result


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
    args = parser.parse_args()

    common = ["--loop", args.loop, "--http", args.http]
    hookd_extra = [*common, *(["--window", str(args.window)] if args.window is not None else [])]
    if args.worker != "none":
        hookd_extra += ["--worker", args.worker]
    load = "wrk" if shutil.which("wrk") else "python (httpx)"
    print(f"load: {load}, {args.connections} connections, {args.duration}s, "
          f"payload {PAYLOAD.stat().st_size} bytes, signed; {args.repeat} rounds, "
          f"{os.cpu_count()} cores")
    rounds: list[tuple[dict[str, Any], dict[str, Any]]] = []
    lost = False
    with tempfile.TemporaryDirectory(prefix="hookd-bench-") as tmp:
        root = Path(tmp)
        for n in range(args.repeat):
            bare = measure("bare", root / str(n), args, common, n)
            hookd = measure("hookd", root / str(n), args, hookd_extra, n)
            rounds.append((bare, hookd))
            print(f"round {n + 1}:")
            for name, r in (("bare starlette + HMAC", bare), ("hookd durable ingest", hookd)):
                print(f"  {name:24s} {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms"
                      f"  p99 {r['p99']:6.2f} ms  non-2xx {r['non2xx']}"
                      f"  CPU {1000 * r['cpu'] / max(r['requests'], 1):.3f} ms/req"
                      f" (loop {1000 * r['loop_cpu'] / max(r['requests'], 1):.3f})"
                      f"  busy cores {(r['cpu'] + r.get('wrk_cpu', 0.0)) / args.duration:.2f}"
                      f" (wrk {r.get('wrk_cpu', 0.0) / args.duration:.2f})"
                      f"  {r['socket_errors']}")
            print(f"  {hookd['inbox']}")
            ok = hookd["requests"] - hookd["non2xx"]
            fine = hookd["recorded"] >= ok
            lost = lost or not fine
            print(f"  ratio {hookd['rps'] / bare['rps'] if bare['rps'] else 0.0:.2f};"
                  f" 2xx answers {ok}, deliveries recorded {hookd['recorded']}"
                  f" ({'OK: every 2xx is recorded' if fine else 'LOST DELIVERIES'})")
        if args.profile == "py-spy":
            if (root / "0" / "hookd.speedscope.json").exists():
                dest = Path(tempfile.gettempdir()) / "hookd-ingest.speedscope.json"
                shutil.copy(root / "0" / "hookd.speedscope.json", dest)
                print(f"profile: {dest} (open in https://www.speedscope.app)")
            else:
                print("profile: py-spy not found or not permitted (pip install py-spy)")

    ratios = sorted(h["rps"] / b["rps"] for b, h in rounds if b["rps"])
    ratio = statistics.median(ratios) if ratios else 0.0
    p99 = statistics.median(h["p99"] for _, h in rounds)
    print(f"median ratio hookd/bare: {ratio:.2f} (goal >= 0.60; rounds "
          f"{', '.join(f'{r:.2f}' for r in ratios)})   median hookd p99: {p99:.1f} ms (goal < 50)")
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
