"""Pipeline throughput: deliveries fully processed per second, hookd against adnanh/webhook.

    python bench/bench_pipeline.py [--deliveries 2000] [--connections 32] [--repeat 3]

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
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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


async def burst(port: int, path: str, headers: dict[str, str], body: bytes, n: int,
                connections: int, tag: str) -> tuple[float, float, int]:
    """Send `n` POSTs over `connections` keep-alive connections; returns (start, end of
    the last answer, number of 2xx answers)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    counter = iter(range(n))
    ok = 0

    async def one_connection() -> None:
        nonlocal ok
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
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
                if status_line.split()[1].startswith(b"2"):
                    ok += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
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


def serve(state: Path, port: int, process: bool = False) -> None:
    """The hookd process: callback server + worker, one flow of one `log` step."""
    import uvicorn

    from hookd import store as stores
    from hookd.config import model
    from hookd.ingest.app import AppState, create_app
    from hookd.runs.worker import Worker
    from hookd.subscriptions import tokens
    from tests.ingest_launcher import make_config

    config = make_config(state, f"http://127.0.0.1:{port}",
                         workers=int(os.environ.get("BENCH_WORKERS", "8")))
    push = config.flows["push"]
    push = dataclasses.replace(push, steps=(model.Step(
        id="log", action=model.LogAction(message="push to {{ trigger.body.repository.full_name }}",
                                         fields={"after": "{{ trigger.body.after }}"})),))
    config = dataclasses.replace(config, flows={**config.flows, "push": push})

    from hookd.telemetry import logs

    # One JSON line per event on stderr (the benchmark sends it to a file), like the
    # journal under systemd; the `log` step writes there too.
    logs.configure("json", "info")

    store = stores.open(config.settings)
    app_state = AppState(config, store, tokens.load_or_create_server_secret(state))
    app_state.inbox.start()
    app = create_app(app_state)

    async def main() -> None:
        worker: Any
        if process:
            from hookd.runs.worker_process import ProcessWorker

            worker = ProcessWorker(app_state, log_format="json", log_level="info")
        else:
            worker = Worker(app_state)
        store.deliveries.on_arrival(worker.poke)  # as the daemon wires it
        await worker.start()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False,
                                               lifespan="off"))
        await server.serve()
        await worker.stop(10)

    asyncio.run(main())
    store.close()


def processed(db: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        runs = conn.execute("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetchone()[0]
        done = conn.execute("SELECT count(*) FROM deliveries WHERE status = 'done'").fetchone()[0]
        steps = conn.execute("SELECT count(*) FROM run_steps WHERE status = 'succeeded'"
                             ).fetchone()[0]
        return int(runs), int(done), int(steps)
    finally:
        conn.close()


def run_hookd(tmp: Path, n: int, connections: int, tag: str,
              process: bool = False) -> tuple[float, float]:
    """Deliveries/s and CPU milliseconds per delivery (hookd and its worker process)."""
    from hookd.callbacks.verify import sign
    from hookd.store.sqlite.db import DB_NAME, open_db
    from tests.ingest_launcher import make_config, subscription

    state = tmp / "state"
    state.mkdir()
    open_db(state).close()
    port = free_port()
    config = make_config(state, f"http://127.0.0.1:{port}")
    target = subscription(config, state, "push")
    log = (tmp / "hookd.log").open("wb")
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(state), "--port", str(port),
                             *(["--process"] if process else [])], stderr=log)
    try:
        wait_listening(port)
        body = PAYLOAD.read_bytes()
        headers = sign(target.verification, target.secret, body, now=time.time())
        time.sleep(1.0)  # let the worker process (if any) finish starting
        cpu_before = tree_cpu(proc.pid)
        start, end_answers, ok = asyncio.run(burst(port, target.path, headers, body, n,
                                                   connections, tag))
        if ok != n:
            raise SystemExit(f"hookd answered {ok}/{n} with 2xx")
        deadline = time.monotonic() + 120
        while processed(state / DB_NAME)[0] < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"hookd processed only {processed(state / DB_NAME)} of {n}")
            time.sleep(0.005)
        end = time.perf_counter()
        runs, done, steps = processed(state / DB_NAME)
        if (runs, done, steps) != (n, n, n):
            raise SystemExit(f"store check failed: runs={runs} done={done} steps={steps}, n={n}")
        print(f"  hookd{' (worker process)' if process else ''}: answers {n / (end_answers - start):.0f}/s, processed "
              f"{n / (end - start):.0f}/s; store: {done} deliveries done, {runs} runs "
              f"succeeded, {steps} steps", flush=True)
        cpu = stop_and_cpu(proc, signal.SIGINT, 30) - cpu_before
        return n / (end - start), 1000 * cpu / n
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        log.close()


def run_worker_only(tmp: Path, n: int) -> float:
    """The pipeline alone: N deliveries already in the inbox (recorded in one transaction,
    as the inbox would), then the worker takes them, runs the one-`log`-step flow and
    records each run. Shows what the pipeline costs apart from HTTP ingest."""
    from hookd.config import model
    from hookd.runs.worker import Worker
    from hookd.store.sqlite.db import DB_NAME, open_db
    from hookd.store.sqlite.deliveries import DeliveryStore, NewDelivery
    from tests.ingest_launcher import make_config

    state = tmp / "state"
    config = make_config(state, "http://127.0.0.1:1",
                         workers=int(os.environ.get("BENCH_WORKERS", "8")))
    push = dataclasses.replace(config.flows["push"], steps=(model.Step(
        id="log", action=model.LogAction(message="push to {{ trigger.body.repository.full_name }}",
                                         fields={"after": "{{ trigger.body.after }}"})),))
    config = dataclasses.replace(config, flows={**config.flows, "push": push})
    body = PAYLOAD.read_bytes()
    conn = open_db(state)
    DeliveryStore(conn).record_many([
        NewDelivery("sub", "push", time.time(), {"x-github-event": "push"}, body, "push")
        for _ in range(n)])
    conn.close()
    logging.getLogger("hookd.flow").addHandler(logging.FileHandler(state / "flow.log"))
    logging.getLogger("hookd.flow").setLevel(logging.INFO)
    logging.getLogger("hookd.flow").propagate = False

    async def go() -> float:
        worker = Worker(lambda: config, poll_interval=0.01)
        start = time.perf_counter()
        await worker.start()
        await worker.idle(300)
        took = time.perf_counter() - start
        await worker.stop(10)
        return took

    took = asyncio.run(go())
    runs, done, steps = processed(state / DB_NAME)
    if (runs, done, steps) != (n, n, n):
        raise SystemExit(f"store check failed: runs={runs} done={done} steps={steps}, n={n}")
    return n / took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--deliveries", "-n", type=int, default=2000)
    parser.add_argument("--connections", "-c", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.process)
        return 0
    print(f"burst of {args.deliveries} signed {PAYLOAD.stat().st_size} B push payloads, "
          f"{args.connections} connections, {args.repeat} rounds", flush=True)
    # Each round brackets the hookd runs between two webhook runs and compares them with
    # the mean of the two: on a shared machine the load drifts between runs, and a ratio
    # taken within one round is far steadier than one taken across rounds.
    rows: list[dict[str, float]] = []
    for r in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp_name:
            tmp = Path(tmp_name)
            for name in ("webhook-a", "webhook-b", "hookd", "hookd-process", "worker"):
                (tmp / name).mkdir()
            wa, wa_cpu = run_webhook(tmp / "webhook-a", args.deliveries, args.connections,
                                     f"wa{r}")
            hk, hk_cpu = run_hookd(tmp / "hookd", args.deliveries, args.connections, f"h{r}")
            hp, hp_cpu = run_hookd(tmp / "hookd-process", args.deliveries, args.connections,
                                   f"p{r}", process=True)
            wk = run_worker_only(tmp / "worker", args.deliveries)
            wb, wb_cpu = run_webhook(tmp / "webhook-b", args.deliveries, args.connections,
                                     f"wb{r}")
            base = (wa + wb) / 2
            rows.append({"webhook": base, "hookd": hk, "process": hp, "worker": wk,
                         "webhook_cpu": (wa_cpu + wb_cpu) / 2, "hookd_cpu": hk_cpu,
                         "process_cpu": hp_cpu})
            print(f"  round {r + 1}: webhook {wa:.0f}/s and {wb:.0f}/s (fully processed: "
                  f"answered after /bin/true ran); hookd {hk:.0f}/s ({hk / base:.2f}x); "
                  f"hookd with worker process {hp:.0f}/s ({hp / base:.2f}x); pipeline alone "
                  f"{wk:.0f}/s ({wk / base:.2f}x); CPU ms per delivery: webhook "
                  f"{(wa_cpu + wb_cpu) / 2:.2f}, hookd {hk_cpu:.2f}, hookd+worker process "
                  f"{hp_cpu:.2f}", flush=True)

    def median(key: str) -> float:
        return statistics.median(row[key] / row["webhook"] for row in rows)

    def verdict(ratio: float) -> str:
        return "stretch met" if ratio >= 1.5 else "goal met" if ratio >= 1.0 else "BELOW GOAL"

    print(f"adnanh/webhook: median {statistics.median(r['webhook'] for r in rows):.0f} "
          "deliveries/s (nothing kept on disk)")
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
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
