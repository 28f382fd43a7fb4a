"""End to end through real processes: `hookd run` on a config directory, the fake GitHub
(hooks created by the reconciler, deliveries signed with the hook's secret), a local sink
server, `hookd runs` / `hookd replay` as a user types them, and kill -9.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.configdir import admin_headers
from tests.fakes.sink import Sink
from tests.pipeline_util import push_payload

PARTS = ("hookd.config.loader", "hookd.reconcile.reconciler", "hookd.ingest.app", "hookd.daemon.lifecycle", "tests.fakes.github")
SEED_CONNECTORS = Path(__file__).resolve().parent / "data" / "daemon" / "connectors"
TOKEN = "t0ken-for-pipeline-tests"


def _missing() -> list[str]:
    out = []
    for name in PARTS:
        try:
            if importlib.util.find_spec(name) is None:
                out.append(name)
        except ModuleNotFoundError:
            out.append(name)
    return out


pytestmark = pytest.mark.skipif(bool(_missing()), reason=f"not built yet: {_missing()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with_value = None
        with contextlib.suppress(httpx.HTTPError, OSError, KeyError, ValueError):
            with_value = check()
        if with_value:
            return with_value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Daemon:
    """`hookd run --config DIR` as a subprocess, against the fake GitHub."""

    def __init__(self, tmp: Path, github_url: str, flows: dict[str, str]) -> None:
        self.tmp = tmp
        self.config = tmp / "config"
        self.state = tmp / "state"
        self.public, self.admin = free_port(), free_port()
        (self.config / "flows").mkdir(parents=True)
        (self.config / "connections").mkdir()
        (self.config / "hookd.yaml").write_text(textwrap.dedent(f"""
            public_url: http://127.0.0.1:{self.public}
            listen:
              public: {{host: 127.0.0.1, port: {self.public}}}
              admin: {{host: 127.0.0.1, port: {self.admin}}}
            state_dir: {self.state}
            shutdown_timeout: 5s
        """))
        shutil.copytree(SEED_CONNECTORS, self.config / "connectors")
        (self.config / "connections" / "github.yaml").write_text(textwrap.dedent(f"""
            connector: github
            base_url: {github_url}
            parameters: {{token: "${{env:GITHUB_TOKEN}}"}}
        """))
        for name, text in flows.items():
            (self.config / "flows" / f"{name}.yaml").write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "daemon.log"

    def start(self) -> None:
        env = {**os.environ, "GITHUB_TOKEN": TOKEN}
        env.pop("NOTIFY_SOCKET", None)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hookd", "run", "--config", str(self.config)],
                env=env, stdout=subprocess.DEVNULL, stderr=log)
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{self.admin}/healthz", timeout=2)
                   .status_code == 200, what="admin listener")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def api(self, path: str, method: str = "GET") -> httpx.Response:
        return httpx.request(method, f"http://127.0.0.1:{self.admin}{path}", timeout=5,
                             headers=admin_headers(self.state, mutation=method != "GET"))

    def hookd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hookd", *args, "--config", str(self.config)],
                              capture_output=True, text=True, timeout=30)


@pytest.fixture
def github() -> Iterator[Any]:
    from tests.fakes.github import FakeGitHub, serve

    with serve(FakeGitHub(token=TOKEN)) as gh:
        yield gh


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


def trigger(repo: str) -> str:
    return textwrap.dedent(f"""
        trigger:
          connector: github
          operation: webhook-trigger
          connection: github
          parameters: {{owner: acme, repo: {repo}}}
    """)


def seed_flow(sink_url: str) -> str:
    return "name: seed\n" + trigger("app") + textwrap.dedent(f"""
        steps:
          - id: main-only
            if: "{{{{ trigger.body.ref == 'refs/heads/main' }}}}"
            set:
              branch: "{{{{ trigger.body.ref | replace('refs/heads/', '') }}}}"
          - id: notify
            if: "steps['main-only'].status == 'succeeded'"
            http:
              method: POST
              url: "{sink_url}/ntfy/pushes"
              headers: {{Title: "push to {{{{ trigger.body.repository.full_name }}}}"}}
              body: "{{{{ trigger.body.pusher.name }}}} pushed {{{{ trigger.body.commits | length }}}} commit(s) to {{{{ trigger.body.repository.full_name }}}} ({{{{ steps['main-only'].output.branch }}}})"
    """)


def test_seed_scenario_and_runs_api(tmp_path: Path, github: Any, sink: Sink) -> None:
    daemon = Daemon(tmp_path, github.base_url, {"seed": seed_flow(sink.url)})
    daemon.start()
    try:
        [hook] = wait_until(lambda: github.hooks_of("acme", "app"), what="hook created")
        main = push_payload() | {"ref": "refs/heads/main",
                                 "commits": [{"id": "c1", "message": "a"},
                                             {"id": "c2", "message": "b"}]}
        tag = push_payload()  # refs/tags/simple-tag: filtered out
        assert github.deliver(hook.id, "push", main).status_code == 202
        assert github.deliver(hook.id, "push", tag).status_code == 202
        wait_until(lambda: len(daemon.api("/api/runs").json()["runs"]) == 2 and all(
            r["status"] == "succeeded" for r in daemon.api("/api/runs").json()["runs"]),
            what="two runs succeeded")
        # Both runs are over, so every request they made has been answered (and recorded).
        assert [r.text for r in sink.received] == [
            "Codertocat pushed 2 commit(s) to Codertocat/Hello-World (main)"]
        assert sink.received[0].headers["title"] == "push to Codertocat/Hello-World"

        listed = daemon.hookd("runs", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        newest, oldest = json.loads(listed.stdout)["runs"]  # as GET /api/runs
        shown = daemon.hookd("runs", "show", oldest["id"])
        assert shown.returncode == 0, shown.stderr
        assert "[0] main-only (set)  succeeded" in shown.stdout
        assert "[1] notify (http)  succeeded" in shown.stdout
        assert "Codertocat pushed 2 commit(s)" in shown.stdout
        skipped = daemon.hookd("runs", "show", newest["id"], "--format", "json")
        assert [s["status"] for s in json.loads(skipped.stdout)["steps"]] == ["skipped", "skipped"]

        # the same over the admin listener, and a replay through it
        doc = daemon.api(f"/api/runs/{oldest['id']}").json()
        assert [s["id"] for s in doc["steps"]] == ["main-only", "notify"]
        assert daemon.api("/api/runs?status=failed").json() == {"runs": []}
        assert daemon.api("/api/runs/nope").status_code == 404
        replayed = daemon.api(f"/api/runs/{oldest['id']}/replay", "POST")
        assert replayed.status_code == 202 and replayed.json()["delivery"] == oldest["delivery"]
        wait_until(lambda: len(sink.received) == 2, what="replayed run")
        again = daemon.api(f"/api/deliveries/{oldest['delivery']}/replay", "POST")
        assert again.status_code in (202, 409)
    finally:
        daemon.stop()
    assert TOKEN not in daemon.log.read_text()


def slow_three_steps(marks: Path, go: Path) -> str:
    """Three `run` steps that log their start and end to `marks`; step two ends only once
    the file `go` exists (the test decides when, instead of a fixed sleep)."""
    def cmd(text: str, wait: bool = False) -> str:
        code = "\n".join([
            "import os, time",
            f"open({str(marks)!r}, 'a').write({text + ' start'!r} + chr(10))",
            f"while {wait} and not os.path.exists({str(go)!r}): time.sleep(0.01)",
            f"open({str(marks)!r}, 'a').write({text + ' end'!r} + chr(10))",
        ])
        return json.dumps([sys.executable, "-c", code])

    return "name: three\n" + trigger("three") + textwrap.dedent(f"""
        steps:
          - id: one
            run: {cmd("one")}
          - id: two
            run: {cmd("two", wait=True)}
          - id: three
            run: {cmd("three")}
    """)


def test_kill_9_mid_run_resumes_without_repeating_finished_steps(
    tmp_path: Path, github: Any
) -> None:
    marks, go = tmp_path / "marks.txt", tmp_path / "go"
    daemon = Daemon(tmp_path, github.base_url, {"three": slow_three_steps(marks, go)})
    daemon.start()
    try:
        [hook] = wait_until(lambda: github.hooks_of("acme", "three"), what="hook created")
        assert github.deliver(hook.id, "push", push_payload()).status_code == 202
        wait_until(lambda: marks.exists() and "two start" in marks.read_text(),
                   what="step two running")
        daemon.kill9()  # step two's process dies with it (PR_SET_PDEATHSIG)
        daemon.start()  # same config and state: the worker resumes the interrupted run
        wait_until(lambda: marks.read_text().count("two start") == 2, what="step two rerun")
        go.touch()
        wait_until(lambda: "three end" in marks.read_text(), timeout=20, what="run completed")
        runs = wait_until(lambda: [r for r in daemon.api("/api/runs").json()["runs"]
                                   if r["status"] == "succeeded"], what="run succeeded")
    finally:
        daemon.stop()
    lines = marks.read_text().splitlines()
    assert lines.count("one start") == 1 and lines.count("one end") == 1  # not executed again
    assert lines.count("two start") == 2 and lines.count("two end") == 1  # interrupted, rerun
    assert lines.count("three start") == 1 and lines.count("three end") == 1
    [run] = runs
    assert run["attempt"] == 1  # the same run, resumed
