"""CPU per callback of the public listener's app, driven in-process, against the bare app.

    python bench/bench_listener_cpu.py [--requests 6000] [--concurrency 32]

bench_ingest.py measures hookd end to end over HTTP, where the answer waits for an fsync
and requests/s depend as much on the disk's latency and on other load on the machine as
on hookd's own work. This bench isolates that work: both ASGI apps are called directly
(no sockets, no HTTP parsing — uvicorn's share is the same for both) with the 7 KB
signed GitHub push, `--concurrency` requests in flight, and prints the CPU milliseconds
per request of the event-loop thread (what limits how many callbacks one hookd process
can take) and of the whole process (the inbox's writer and sync threads included), for:

- baseline: the bare starlette app of bench_ingest.py (read the body, check the HMAC,
  answer 202);
- hookd:    `hookd.ingest.app.create_app` — route + token, HMAC, JSON, schema, dedup, durable
            record through the inbox (real SQLite file, real fsync), 202.

and the ratios hookd/baseline. Every hookd answer must be 202.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hookd.callbacks.verify import sign  # noqa: E402
from hookd.subscriptions import tokens  # noqa: E402
from tests.ingest_launcher import DATA, bare_app, make_config, subscription  # noqa: E402

PAYLOAD = DATA / "github" / "push.0.json"


async def drive(app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes,
                n: int, concurrency: int, first: int = 0) -> tuple[dict[int, int], float, float, float]:
    """Send `n` requests through `app`; returns statuses, wall, loop-thread and process CPU s."""
    statuses: dict[int, int] = {}

    async def one(i: int) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "headers": [*headers, (b"x-github-delivery", b"cpu-%d" % i)],
        }
        delivered, answered = False, asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:  # as uvicorn: "disconnect" once the response is complete
                await answered.wait()
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1
            elif not message.get("more_body", False):
                answered.set()

        await app(scope, receive, send)

    async def client(k: int) -> None:  # one of `concurrency` keep-alive clients
        for i in range(first + k, first + n, concurrency):
            await one(i)

    wall, loop_cpu, cpu = time.perf_counter(), time.thread_time(), time.process_time()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return (statuses, time.perf_counter() - wall, time.thread_time() - loop_cpu,
            time.process_time() - cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    from hookd import store as stores
    from hookd.ingest.app import AppState, create_app

    body = PAYLOAD.read_bytes()
    with tempfile.TemporaryDirectory(prefix="hookd-cpu-") as tmp:
        state_dir = Path(tmp)
        config = make_config(state_dir)
        target = subscription(config, state_dir, "push")
        signature = sign(target.verification, target.secret, body, now=0)
        headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"x-github-event", b"push"),
                   (b"user-agent", b"bench"),
                   *((k.lower().encode(), v.encode()) for k, v in signature.items())]
        state = AppState(config, stores.open(config.settings),
                         tokens.load_or_create_server_secret(state_dir))
        apps = {"bare starlette + HMAC": bare_app(target.secret), "hookd": create_app(state)}

        async def run() -> dict[str, tuple[dict[int, int], float, float, float]]:
            out = {}
            for name, app in apps.items():
                await drive(app, target.path, headers, body, 300, args.concurrency)  # warm up
                out[name] = await drive(app, target.path, headers, body, args.requests,
                                        args.concurrency, first=1000)
            await state.aclose()
            return out

        results = asyncio.run(run())
    n = args.requests
    print(f"{n} requests in process, {args.concurrency} in flight, payload {len(body)} bytes, signed")
    for name, (statuses, wall, loop_cpu, cpu) in results.items():
        print(f"{name:22s} {n / wall:7.0f} req/s  loop thread {1000 * loop_cpu / n:.3f} ms/req"
              f"  process {1000 * cpu / n:.3f} ms/req  answers {statuses}")
    st = state.inbox.stats
    print(f"inbox: {st.commits} write transactions (mean batch {st.jobs / max(st.commits, 1):.1f}),"
          f" {st.syncs} fsyncs")
    base, hookd = results["bare starlette + HMAC"], results["hookd"]
    print(f"ratio hookd/bare CPU per request: loop thread {hookd[2] / base[2]:.2f}x, "
          f"process {hookd[3] / base[3]:.2f}x")
    return 0 if hookd[0] == {202: n} else 1


if __name__ == "__main__":
    raise SystemExit(main())
