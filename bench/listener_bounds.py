"""Issue 16 items 1 and 3 against a real `hookd run` under ``ulimit -n 1024``.

    python bench/listener_bounds.py SRC_DIR

SRC_DIR is a hookd source tree: this one, or an older commit's (``git archive <commit> |
tar -x -C DIR``) to compare. The script opens 1000 idle connections to the public
listener, tries 10 signed deliveries and 10 ``/readyz``, watches (up to 40 s) how many of
the idle connections the server closes, then sends a 1 MiB and a 64 MiB header and four
48 MiB ones, and prints what was answered, what was stored and the listener's RSS. Not a
ratio benchmark: docs/adr/0009-listener-bounds.md quotes its output.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_daemon import free_port  # noqa: E402
from tests.test_protocol import SECRET, big_header_request, closed_by_peer  # noqa: E402


def write_config(tmp: Path, public: int, admin: int) -> Path:
    config = tmp / "config"
    (config / "flows").mkdir(parents=True)
    (config / "hookd.yaml").write_text(textwrap.dedent(f"""
        public_url: http://127.0.0.1:{public}
        listen:
          public: {{host: 127.0.0.1, port: {public}}}
          admin: {{host: 127.0.0.1, port: {admin}}}
        state_dir: {tmp / 'state'}
    """))
    (config / "flows" / "signed.yaml").write_text(
        "name: signed\ntrigger: {connector: http}\nverify_secret: ${env:HOOK_SECRET}\n"
        "steps:\n  - id: say\n    log: {message: hi}\n")
    return config


class Run:
    def __init__(self, src: str) -> None:
        sys.path.insert(0, src)
        os.environ["HOOK_SECRET"] = SECRET
        self.tmp = Path(tempfile.mkdtemp())
        self.public, self.admin = free_port(), free_port()
        config = write_config(self.tmp, self.public, self.admin)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hookd", "run", "--config", str(config)],
            env={**os.environ, "PYTHONPATH": src}, cwd=src, stdout=subprocess.DEVNULL,
            stderr=(self.tmp / "log").open("w"),
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)))
        deadline = time.monotonic() + 30
        while self.ready() != 200:
            if time.monotonic() > deadline:
                raise SystemExit("hookd did not become ready")
            time.sleep(0.1)
        from hookd.config.loader import load_config
        from hookd.subscriptions.desired import desired_subscriptions

        loaded, _ = load_config(config)
        assert loaded is not None
        (sub,) = desired_subscriptions(loaded, (self.tmp / "state/server.secret").read_bytes())
        self.url = sub.callback_url

    def headers(self, body: bytes) -> dict[str, str]:
        from hookd.callbacks import verify
        from hookd.connectors.model import Verification

        return verify.sign(Verification("standard-webhooks", "", ""), SECRET, body,
                           now=time.time())

    def deliver(self) -> str:
        body = b'{"n": 1}'
        try:
            return str(httpx.post(self.url, content=body, timeout=3, headers={
                **self.headers(body), "content-type": "application/json"}).status_code)
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def ready(self) -> int | str:
        try:
            return httpx.get(f"http://127.0.0.1:{self.admin}/readyz", timeout=3).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+)", status)
        return int(match.group(1)) / 1024 if match else 0.0

    def big_header(self, size: int) -> str:
        """A signed request with a `size`-byte header: the status line answered."""
        body = b'{"n": 2}'
        answer = big_header_request(self.public, httpx.URL(self.url).raw_path.decode(), size,
                                    body=body, headers=self.headers(body), timeout=60)
        return answer.split(b"\r\n", 1)[0].decode()

    def stored_big(self) -> tuple[int, int]:
        conn = sqlite3.connect(self.tmp / "state" / "hookd.db")
        try:
            count, size = conn.execute(
                "SELECT count(*), coalesce(max(length(headers)), 0) FROM deliveries "
                "WHERE headers LIKE '%x-big%'").fetchone()
            return int(count), int(size)
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def main(src: str) -> None:
    run = Run(src)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        idle = []
        for _ in range(1000):
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection(("127.0.0.1", run.public), timeout=2))
        opened = time.monotonic()
        delivered = [run.deliver() for _ in range(10)]
        ready = [str(run.ready()) for _ in range(10)]
        print(f"item 1: {len(idle)} idle connections; deliveries {delivered.count('202')}/10 "
              f"accepted {set(delivered)}; /readyz {ready.count('200')}/10 ok {set(ready)}")
        while time.monotonic() - opened < 40 and not all(closed_by_peer(s) for s in idle):
            time.sleep(0.2)
        closed = sum(closed_by_peer(s) for s in idle)
        print(f"item 1: {closed}/{len(idle)} idle connections closed by the server after "
              f"{time.monotonic() - opened:.1f}s (watched up to 40 s)")
        for s in idle:
            s.close()
        before = run.rss_mib()
        small, large = run.big_header(1 << 20), run.big_header(64 << 20)
        print(f"item 3: 1 MiB header -> {small!r}; 64 MiB header -> {large!r}; stored with "
              f"x-big (count, largest headers bytes): {run.stored_big()}")
        middle = run.rss_mib()
        for _ in range(4):
            run.big_header(48 << 20)
        print(f"item 3: RSS {before:.0f} MiB before, {middle:.0f} after 1+64 MiB, "
              f"{run.rss_mib():.0f} after 4 x 48 MiB")
    finally:
        run.stop()


if __name__ == "__main__":
    main(sys.argv[1])
