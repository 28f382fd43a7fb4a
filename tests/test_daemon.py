"""The daemon as operators meet it: a real `hookd run` process, signals, sd_notify, reload.

Two kinds of process tests:

- lifecycle tests start the daemon with a tiny stand-in config loader (flows are just
  names), so the daemon's own duties — listeners, sd_notify, SIGHUP, rejected configs,
  graceful stop, `hookd status` — are tested whatever state the other parts are in;
- end-to-end tests start the real `hookd run` on a real config directory against the
  fake GitHub (tests/fakes/github.py) and skip, naming what is missing, until the config
  loader, the reconciler and the callback server are all there.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from hookd.daemon import reload, status
from tests.configdir import admin_headers

REPO = Path(__file__).resolve().parent.parent

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Notifications:
    """A NOTIFY_SOCKET the test listens on, as systemd would."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, timeout: float = 10.0) -> dict[str, str]:
        """The next message (after those already consumed) that sets `key`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            message = dict(line.split("=", 1) for line in data.splitlines())
            self.messages.append(message)
            if key in message:
                return message
        raise AssertionError(f"no {key}= within {timeout}s; got {self.messages}")

    def drain(self) -> None:
        """Read what is queued: a datagram queue is short (net.unix.max_dgram_qlen) and
        the sender drops messages when it is full, as it should with a stalled systemd."""
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096).decode()
                self.messages.append(dict(line.split("=", 1) for line in data.splitlines()))
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()


class Running:
    def __init__(self, proc: subprocess.Popen[str], admin: str, public: str,
                 notify: Notifications, state: Path) -> None:
        self.proc, self.admin, self.public, self.notify = proc, admin, public, notify
        self.state = state

    def get(self, path: str) -> httpx.Response:
        """GET on the admin listener, with the token (`/api/…` requires it)."""
        return httpx.get(self.admin + path, timeout=5, headers=admin_headers(self.state))

    def stop(self, timeout: float = 15) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


def http_flow(name: str, steps: str = "") -> str:
    """A flow on the built-in `http` request trigger (no upstream to register with)."""
    return f"name: {name}\ntrigger: {{connector: http}}\nsteps:\n" + (
        steps or f"  - id: say\n    log: {{message: 'hello from {name}'}}\n")


def write_http_config(config: Path, state: Path, flows: dict[str, str]) -> tuple[int, int]:
    public, admin = free_port(), free_port()
    (config / "flows").mkdir(parents=True, exist_ok=True)
    (config / "hookd.yaml").write_text(textwrap.dedent(f"""
        public_url: http://127.0.0.1:{public}
        listen:
          public: {{host: 127.0.0.1, port: {public}}}
          admin: {{host: 127.0.0.1, port: {admin}}}
        state_dir: {state}
        shutdown_timeout: 10s
    """))
    for name, text in flows.items():
        (config / "flows" / f"{name}.yaml").write_text(text)
    return public, admin


@pytest.fixture
def daemon_on(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start `hookd run` on tmp_path/config with `http` flows; killed at the end if alive."""
    started: list[Running] = []

    def start(flows: tuple[str, ...] = ("a",), env: dict[str, str] | None = None,
              texts: dict[str, str] | None = None) -> Running:
        config = tmp_path / "config"
        public, admin = write_http_config(
            config, tmp_path / "state", texts or {name: http_flow(name) for name in flows})
        notify = Notifications(tmp_path)
        proc = subprocess.Popen(
            [sys.executable, "-m", "hookd", "run", "--config", str(config)],
            env={**os.environ, "NOTIFY_SOCKET": notify.path, **(env or {})},
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )
        running = Running(proc, f"http://127.0.0.1:{admin}", f"http://127.0.0.1:{public}", notify,
                          tmp_path / "state")
        started.append(running)
        return running

    yield start
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()
        running.notify.close()


# --------------------------------------------------------------------------- lifecycle


def test_sd_notify_lifecycle_and_clean_exit(
    daemon_on: Callable[..., Running], tmp_path: Path
) -> None:
    hookd = daemon_on(flows=("a", "b"), env={"WATCHDOG_USEC": "400000"})
    ready = hookd.notify.wait_for("READY")
    assert ready["STATUS"] == "2 flows, 0 subscriptions active, 0 failing"
    assert hookd.get("/readyz").status_code == 200  # READY=1 means listening
    hookd.notify.wait_for("WATCHDOG", timeout=2)

    hookd.notify.drain()
    hookd.proc.send_signal(signal.SIGHUP)
    reloading = hookd.notify.wait_for("RELOADING")
    assert int(reloading["MONOTONIC_USEC"]) > 0
    assert "STATUS" in hookd.notify.wait_for("READY")

    check_status_command(hookd, flows=2, config=tmp_path / "config")

    hookd.notify.drain()
    hookd.proc.send_signal(signal.SIGTERM)
    hookd.notify.wait_for("STOPPING")
    assert hookd.proc.wait(15) == 0
    assert '"msg": "stopped"' in hookd.log()

    down = subprocess.run([sys.executable, "-m", "hookd", "status", "--admin", hookd.admin],
                          capture_output=True, text=True, timeout=30)
    assert down.returncode == 2
    assert "no hookd answering" in down.stderr


def check_status_command(hookd: Running, flows: int, config: Path) -> None:
    """`hookd status` against the running daemon, as JSON (--admin URL) and as text
    (--config DIR: the admin address comes from hookd.yaml)."""
    cmd = [sys.executable, "-m", "hookd", "status", "--admin", hookd.admin]
    as_json = subprocess.run([*cmd, "--state-dir", str(hookd.state), "--format", "json"],
                             capture_output=True, text=True, timeout=30)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["config"]["revision"]
    assert doc["config"]["last_reload"]["outcome"] == "applied"
    assert doc["inbox_depth"] == 0
    text = subprocess.run([*cmd[:4], "--config", str(config)], capture_output=True, text=True,
                          timeout=30)
    assert text.returncode == 0, text.stderr
    assert f"revision {doc['config']['revision']}" in text.stdout
    assert f"{flows} flows, 0 subscriptions active, 0 failing" in text.stdout


def test_rejected_config_keeps_the_last_good_one(
    daemon_on: Callable[..., Running], tmp_path: Path
) -> None:
    hookd = daemon_on(flows=("a",))
    hookd.notify.wait_for("READY")
    flows = tmp_path / "config" / "flows"

    (flows / "b.yaml").write_text(http_flow("b"))  # picked up without a signal
    wait_until(lambda: hookd.get("/api/status").json()["config"]["flows"] == 2, what="b")

    (flows / "a.yaml").write_text("name: [a\n")  # broken YAML
    rejected = wait_until(
        lambda: (r := hookd.get("/readyz")).json().get("config") == "rejected" and r,
        what="rejection on /readyz",
    )
    assert rejected.status_code == 200  # still serving the last good config
    assert "flows/a.yaml:" in rejected.json()["rejected"]
    doc = hookd.get("/api/status").json()
    assert doc["config"]["flows"] == 2
    assert doc["config"]["last_reload"]["outcome"] == "rejected"
    assert "hookd_config_rejected 1" in hookd.get("/metrics").text
    # `hookd status -c DIR` needs only listen.admin: it works on the broken config.
    shown = subprocess.run([sys.executable, "-m", "hookd", "status", "-c", str(tmp_path / "config")],
                           capture_output=True, text=True, timeout=30)
    assert shown.returncode == 1, shown.stderr  # running, needs attention
    assert "last reload:    rejected" in shown.stdout and "flows/a.yaml:" in shown.stdout
    metrics = hookd.get("/metrics").text
    assert 'hookd_config_reloads_total{outcome="rejected"} 1' in metrics
    assert f'hookd_config_info{{revision="{doc["config"]["revision"]}"}} 1' in metrics

    (flows / "a.yaml").write_text(http_flow("a"))
    wait_until(lambda: hookd.get("/readyz").json()["config"] == "ok", what="fixed config")
    assert hookd.stop() == 0
    assert "config rejected" in hookd.log()


def test_refused_deliveries_and_finished_runs_are_logged_at_info(
    daemon_on: Callable[..., Running], tmp_path: Path
) -> None:
    """Issue 16 item 16: a line per refused delivery (throttled) and per finished run."""
    signed = http_flow("signed").replace(
        "trigger: {connector: http}\n", "trigger: {connector: http}\nverify_secret: s3cr3t-value\n")
    hookd = daemon_on(texts={"open": http_flow("open"), "signed": signed})
    hookd.notify.wait_for("READY")
    listed = subprocess.run([sys.executable, "-m", "hookd", "subscriptions", "-c",
                             str(tmp_path / "config"), "--format", "json"],
                            capture_output=True, text=True, timeout=30)
    urls = {r["flow"]: r["callback_url"] for r in json.loads(listed.stdout)["request_triggers"]}
    assert httpx.post(urls["open"], json={"n": 1}, timeout=5).status_code == 202
    for _ in range(20):  # unsigned: refused, logged at most 5 times per 10 s
        assert httpx.post(urls["signed"], json={"n": 2}, timeout=5).status_code == 401
    wait_until(lambda: hookd.get("/api/status").json()["runs_last_hour"].get("succeeded"),
               what="the run")
    assert hookd.stop() == 0
    lines = [json.loads(line) for line in hookd.log().splitlines() if line.startswith("{")]
    refused = [e for e in lines if e["msg"] == "delivery refused"]
    assert 1 <= len(refused) <= 5, refused
    first = refused[0]
    assert first["level"] == "info" and first["status"] == 401 and first["flow"] == "signed"
    assert first["reason"].startswith("verification failed") and first["subscription"]
    token = urls["signed"].rsplit("/", 1)[1]
    assert token not in hookd.log() and "s3cr3t-value" not in hookd.log()
    (finished,) = [e for e in lines if e["msg"] == "run finished"]
    assert (finished["level"], finished["flow"], finished["outcome"]) == ("info", "open",
                                                                          "succeeded")
    assert finished["duration"] >= 0 and finished["run"]


def test_a_config_warning_is_logged_once_not_on_every_reload(
    daemon_on: Callable[..., Running], tmp_path: Path
) -> None:
    flow = http_flow("a", "  - id: say\n    log: {message: '{{ env.HOME }}'}\n")
    hookd = daemon_on(texts={"a": flow})
    hookd.notify.wait_for("READY")
    for _ in range(2):
        hookd.notify.drain()
        hookd.proc.send_signal(signal.SIGHUP)
        hookd.notify.wait_for("RELOADING")
        hookd.notify.wait_for("READY")
    (tmp_path / "config" / "flows" / "b.yaml").write_text(http_flow("b"))  # another change
    wait_until(lambda: hookd.get("/api/status").json()["config"]["flows"] == 2, what="b")
    assert hookd.stop() == 0
    log = hookd.log()
    assert log.count("env.HOME is not in the env allow-list") == 1, log
    assert log.count('"msg": "config applied"') >= 3


SOCKET_ACTIVATED = textwrap.dedent("""
    import os, sys
    os.dup2(int(sys.argv[1]), 3)  # systemd passes the first socket as fd 3
    os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
    os.execv(sys.executable, [sys.executable, "-m", "hookd", "run", "--config", sys.argv[2]])
""")


def test_socket_activation_serves_the_public_listener_on_the_passed_socket(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    public, admin = write_http_config(config, tmp_path / "state", {"a": http_flow("a")})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    activated = listener.getsockname()[1]
    notify = Notifications(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", SOCKET_ACTIVATED, str(listener.fileno()), str(config)],
        env={**os.environ, "NOTIFY_SOCKET": notify.path}, pass_fds=[listener.fileno()],
        stderr=subprocess.DEVNULL,
    )
    listener.close()  # the daemon holds its own copy
    try:
        notify.wait_for("READY")
        answer = httpx.post(f"http://127.0.0.1:{activated}/hooks/nope/nope", json={}, timeout=5)
        assert answer.status_code == 404  # the callback app, through the passed socket
        with pytest.raises(httpx.ConnectError):
            httpx.post(f"http://127.0.0.1:{public}/hooks/nope/nope", json={}, timeout=5)
        assert httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


def test_a_port_in_use_stops_with_exit_code_2(tmp_path: Path) -> None:
    config = tmp_path / "config"
    public, _ = write_http_config(config, tmp_path / "state", {"a": http_flow("a")})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", public))
        taken.listen()
        done = subprocess.run([sys.executable, "-m", "hookd", "run", "--config", str(config)],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "a listener failed to start" in done.stderr


# --------------------------------------------------------------------------- pieces


def callback_url(tmp_path: Path) -> str:
    """The callback URL of the only flow in tmp_path/config, as the daemon derives it."""
    from hookd.config.loader import load_config
    from hookd.subscriptions.desired import desired_subscriptions

    config, diagnostics = load_config(tmp_path / "config")
    assert config is not None, diagnostics
    secret = (tmp_path / "state" / "server.secret").read_bytes()
    (subscription,) = desired_subscriptions(config, secret)
    return subscription.callback_url


@pytest.mark.parametrize("worker", ["inline", "process"])
def test_stop_drains_running_steps_and_refuses_new_deliveries(
    daemon_on: Callable[..., Running], tmp_path: Path, worker: str
) -> None:
    marker, go = tmp_path / "finished", tmp_path / "go"
    # The step runs until the test creates `go` (once it has seen the daemon stopping).
    script = (f"import pathlib, time\nwhile not pathlib.Path({str(go)!r}).exists(): time.sleep(0.01)"
              f"\npathlib.Path({str(marker)!r}).write_text('ok')")
    steps = f"  - id: slow\n    run: {json.dumps([sys.executable, '-c', script])}\n"
    hookd = daemon_on(texts={"slow": http_flow("slow", steps)}, env={"HOOKD_WORKER": worker})
    hookd.notify.wait_for("READY")
    url = callback_url(tmp_path)
    assert httpx.post(url, json={"n": 1}, timeout=5).status_code == 202
    wait_until(lambda: hookd.get("/api/runs?status=running").json()["runs"], what="run started")

    hookd.proc.send_signal(signal.SIGTERM)
    hookd.notify.wait_for("STOPPING")
    refused = httpx.post(url, json={"n": 2}, timeout=5)
    assert refused.status_code == 503  # not recorded: the upstream keeps it and retries
    assert hookd.get("/readyz").status_code == 503
    assert hookd.proc.poll() is None  # still draining
    go.touch()
    assert hookd.proc.wait(15) == 0
    assert marker.read_text() == "ok"  # the running step was allowed to finish

    from hookd.store.sqlite import db
    from hookd.store.sqlite.runs import RunStore

    conn = db.open_db(tmp_path / "state")
    assert [r.status for r in RunStore(conn).list()] == ["succeeded"]
    conn.close()


@pytest.mark.parametrize(
    ("change", "path", "reload_"),
    [
        (reload.Change.modified, "/c/hookd.yaml", True),
        (reload.Change.added, "/c/flows/new.yml", True),
        (reload.Change.deleted, "/c/flows/old.yaml", True),
        (reload.Change.added, "/c/connectors/acme/apiDefinition.swagger.json", True),
        (reload.Change.deleted, "/c/connectors/acme", True),  # directory removed
        (reload.Change.added, "/c/flows/4913", False),  # vim's write probe
        (reload.Change.modified, "/c/flows/a.yaml~", False),
        (reload.Change.added, "/c/flows/.a.yaml.swp", False),
        (reload.Change.modified, "/c/.git/index", False),
        (reload.Change.modified, "/c/state/hookd.db-wal", False),
        (reload.Change.modified, "/c/state/x.json", False),
        (reload.Change.modified, "/c/README.md", False),
    ],
)
def test_which_file_events_reload(change: reload.Change, path: str, reload_: bool) -> None:
    accept = reload.ConfigFilter(Path("/c"), exclude=[Path("/c/state")])
    assert accept(change, path) is reload_


def test_status_text_and_exit_code() -> None:
    facts = status.StatusFacts(
        version="0.1.0", started_at=1000.0, now=1130.0, revision="3f2a1c0d9e12",
        flows=3, last_reload=status.ReloadOutcome(1100.0, "watch", False, "sha256:abc",
                                                  ("flows/a.yaml:1:7: error: bad",)),
        subscriptions={"active": 2, "failed": 1}, inbox_depth=4,
        runs_last_hour={"succeeded": 10, "failed": 1},
        failures=[status.Failure("subscription", "deploy", "deploy-1a", "401 bad credentials")],
    )
    doc = status.document(facts)
    assert doc["summary"] == "3 flows, 2 subscriptions active, 1 failing"
    text = status.format_text(doc, now=1130.0)
    assert "revision 3f2a1c0d9e12, 3 flows" in text
    assert "last reload:    rejected (watch, 30s ago, revision sha256:abc)" in text
    assert "flows/a.yaml:1:7: error: bad" in text
    assert "inbox depth:    4" in text
    assert "runs (1 h):     1 failed, 10 succeeded" in text
    assert "subscription deploy (deploy-1a): 401 bad credentials" in text
    assert status.exit_code(doc) == 1
    healthy = status.document(status.StatusFacts(
        "0.1.0", 0, 1, "r", 1, None, {"active": 1}, 0, None))
    assert status.exit_code(healthy) == 0


def test_a_pending_subscription_whose_create_failed_counts_as_failing() -> None:
    counts = status.state_counts([("active", None), ("pending", None),
                                  ("pending", "POST …/hooks: 502 Bad Gateway")])
    assert counts == {"active": 1, "pending": 1, "retrying": 1}
    assert status.summary_line(3, counts) == "3 flows, 1 subscriptions active, 1 failing"
    doc = status.document(status.StatusFacts("0.1.0", 0, 1, "r", 3, None, counts, 0, None))
    assert status.exit_code(doc) == 1


def test_every_option_of_run_and_status_is_documented() -> None:
    import argparse

    from hookd.cli.main import build_parser

    docs = (REPO / "docs" / "daemon.md").read_text()
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for name in ("run", "status"):
        assert f"hookd {name}" in docs
        for action in commands.choices[name]._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert f"`{option}" in docs, f"hookd {name} {option} is not in docs/daemon.md"


# --------------------------------------------------------------------------- end to end

E2E_PARTS = ("hookd.config.loader", "hookd.reconcile.reconciler", "tests.fakes.github")


def missing_parts() -> list[str]:
    missing = []
    for name in E2E_PARTS:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


needs_all_parts = pytest.mark.skipif(
    bool(missing_parts()), reason=f"not built yet: {', '.join(missing_parts())}"
)


@pytest.mark.skipif(importlib.util.find_spec("hookd.config.loader") is None,
                    reason="hookd.config.loader (the config loader) is not built yet")
def test_invalid_config_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "flows").mkdir(parents=True)
    (config / "hookd.yaml").write_text("public_url: https://hooks.example.net\n")
    (config / "flows" / "bad.yaml").write_text("name: bad\ntrigger: [unclosed\n")
    done = subprocess.run([sys.executable, "-m", "hookd", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "flows/bad.yaml:" in done.stderr
    assert "not starting" in done.stderr


def write_config(config: Path, public: int, admin: int, state: Path, github: str) -> None:
    (config / "flows").mkdir(parents=True)
    (config / "connections").mkdir()
    (config / "hookd.yaml").write_text(textwrap.dedent(f"""
        public_url: http://127.0.0.1:{public}
        listen:
          public: {{host: 127.0.0.1, port: {public}}}
          admin: {{host: 127.0.0.1, port: {admin}}}
        state_dir: {state}
        shutdown_timeout: 5s
        reconcile: {{interval: 1s, jitter: 0}}
    """))
    (config / "connections" / "github.yaml").write_text(textwrap.dedent(f"""
        connector: github
        base_url: {github}
        parameters: {{token: "${{env:GITHUB_TOKEN}}"}}
    """))


def github_flow(name: str, repo: str) -> str:
    return textwrap.dedent(f"""
        name: {name}
        trigger:
          connector: github
          operation: webhook-trigger
          connection: github
          parameters: {{owner: acme, repo: {repo}}}
        steps:
          - id: say
            log: {{message: "push to {repo}"}}
    """)


@needs_all_parts
def test_github_flows_follow_the_config_directory(tmp_path: Path) -> None:
    from tests.fakes.github import FakeGitHub, serve

    token = "t0ken-for-tests"
    with serve(FakeGitHub(token=token)) as github:
        config = tmp_path / "config"
        public, admin = free_port(), free_port()
        write_config(config, public, admin, tmp_path / "state", github.base_url)
        (config / "flows" / "one.yaml").write_text(github_flow("one", "one"))
        notify = Notifications(tmp_path)
        proc = subprocess.Popen(
            [sys.executable, "-m", "hookd", "run", "--config", str(config)],
            env={**os.environ, "NOTIFY_SOCKET": notify.path, "GITHUB_TOKEN": token,
                 "STALE_TOKEN": "stale-token-value"},
            stderr=subprocess.PIPE, text=True,
        )
        admin_url = f"http://127.0.0.1:{admin}"

        def readyz() -> Any:
            return httpx.get(admin_url + "/readyz", timeout=5).json()

        try:
            notify.wait_for("READY", timeout=15)
            wait_until(lambda: len(github.hooks_of("acme", "one")) == 1, what="first hook")

            # Drift: someone deletes the hook upstream; the scheduled reconcile (every
            # second here) notices through the list operation and creates it again.
            (first,) = github.hooks_of("acme", "one")
            del github.hooks[first.id]
            wait_until(lambda: len(github.hooks_of("acme", "one")) == 1, what="hook recreated")
            assert github.hooks_of("acme", "one")[0].id != first.id

            (config / "flows" / "two.yaml").write_text(github_flow("two", "two"))
            wait_until(lambda: len(github.hooks_of("acme", "two")) == 1, what="second hook")

            (config / "flows" / "one.yaml").write_text("name: one\ntrigger: [broken\n")
            wait_until(lambda: readyz()["config"] == "rejected", what="rejected config")
            assert "flows/one.yaml:" in readyz()["rejected"]
            # A scheduled reconcile (every second) ran on the running config since.
            github.reset_counters()
            wait_until(lambda: {("GET", "/repos/acme/one/hooks"),
                                ("GET", "/repos/acme/two/hooks")} <= set(github.log), what="a pass")
            assert len(github.hooks_of("acme", "one")) == 1  # nothing deleted
            assert len(github.hooks_of("acme", "two")) == 1

            (config / "flows" / "one.yaml").write_text(github_flow("one", "one"))
            wait_until(lambda: readyz()["config"] == "ok", what="fixed config")

            (config / "flows" / "two.yaml").unlink()
            wait_until(lambda: github.hooks_of("acme", "two") == [], what="hook deleted")
            assert len(github.hooks_of("acme", "one")) == 1

            # A flow whose credentials upstream refuses: failing, and shown as such.
            notify.drain()
            (config / "connections" / "stale.yaml").write_text(
                f'connector: github\nbase_url: {github.base_url}\n'
                'parameters: {token: "${env:STALE_TOKEN}"}\n')
            (config / "flows" / "three.yaml").write_text(
                github_flow("three", "three").replace("connection: github", "connection: stale"))
            wait_until(lambda: notify.wait_for("STATUS")["STATUS"].endswith("1 failing"),
                       what="failing subscription")
            shown = subprocess.run([sys.executable, "-m", "hookd", "status", "--admin", admin_url,
                                    "--state-dir", str(tmp_path / "state")],
                                   capture_output=True, text=True, timeout=30)
            assert shown.returncode == 1  # needs attention
            assert "subscription three" in shown.stdout and "bad credentials" in shown.stdout
            assert "stale-token-value" not in shown.stdout

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
            assert len(github.hooks_of("acme", "one")) == 1  # not deleted on shutdown
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            notify.close()
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert "config rejected" in log
        assert token not in log and "stale-token-value" not in log


@needs_all_parts
@pytest.mark.parametrize("emptied", ["", "# name: one (disabled for now)\n", "[]\n"])
def test_an_emptied_flow_file_keeps_its_upstream_hook(tmp_path: Path, emptied: str) -> None:
    """A truncated or commented-out flow file is refused, not read as "delete the flow"
    (issue 16 item 2); removing the file is how flows are removed."""
    from tests.fakes.github import FakeGitHub, serve

    token = "t0ken-for-tests"
    with serve(FakeGitHub(token=token)) as github:
        config = tmp_path / "config"
        public, admin = free_port(), free_port()
        write_config(config, public, admin, tmp_path / "state", github.base_url)
        (config / "flows" / "one.yaml").write_text(github_flow("one", "one"))
        (config / "flows" / "two.yaml").write_text(github_flow("two", "two"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "hookd", "run", "--config", str(config)],
            env={**os.environ, "GITHUB_TOKEN": token}, stderr=subprocess.PIPE, text=True,
        )
        admin_url = f"http://127.0.0.1:{admin}"

        def readyz() -> Any:
            return httpx.get(admin_url + "/readyz", timeout=5).json()

        try:
            wait_until(lambda: len(github.hooks_of("acme", "one")) == 1
                       and len(github.hooks_of("acme", "two")) == 1, timeout=20,
                       what="both hooks")
            (config / "flows" / "one.yaml").write_text(emptied)
            wait_until(lambda: readyz()["config"] == "rejected", what="rejected config")
            assert "flows/one.yaml:" in readyz()["rejected"]
            assert "yields no flows" in readyz()["rejected"]
            doc = httpx.get(admin_url + "/api/status", timeout=5,
                            headers=admin_headers(tmp_path / "state")).json()
            assert doc["config"]["flows"] == 2
            # A scheduled reconcile (every second) ran on the running config since.
            github.reset_counters()
            wait_until(lambda: ("GET", "/repos/acme/two/hooks") in github.log, what="a pass")
            assert len(github.hooks_of("acme", "one")) == 1

            (hook,) = github.hooks_of("acme", "one")
            (config / "flows" / "one.yaml").unlink()
            wait_until(lambda: github.hooks_of("acme", "one") == [], what="hook deleted")
            assert len(github.hooks_of("acme", "two")) == 1
            assert readyz()["config"] == "ok"
            # The removed flow's URL answers 410 also once its hook is deleted (item 18).
            late = httpx.post(hook.config["url"], json={"zen": "late"}, timeout=5,
                              headers={"X-GitHub-Event": "ping", "User-Agent": "GitHub-Hookshot/x"})
            assert late.status_code == 410, late.text
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        assert proc.stderr is not None
        assert "yields no flows" in proc.stderr.read()


# --------------------------------------------------------------------------- Reloader


class FakeTarget:
    def __init__(self) -> None:
        self.notifier = Notifier()
        self.applied: list[tuple[str, str]] = []
        self.rejected: list[status.ReloadOutcome] = []
        self.config: Any = SimpleNamespace(flows={})

    async def apply_config(self, config: Any, revision: str, trigger: str) -> None:
        self.applied.append((revision, trigger))

    def config_rejected(self, outcome: status.ReloadOutcome) -> None:
        self.rejected.append(outcome)

    def summary(self) -> str:
        return "summary"


class Notifier:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def reloading(self) -> bool:
        self.sent.append("RELOADING")
        return True

    def ready(self, status: str | None = None) -> bool:
        self.sent.append("READY")
        return True


def test_reloader_applies_rejects_and_skips_unchanged_files(tmp_path: Path) -> None:
    from hookd.diagnostics import Diagnostic

    (tmp_path / "flows").mkdir()
    flow = tmp_path / "flows" / "a.yaml"
    flow.write_text("name: a\n")
    results: list[Any] = []

    def load() -> Any:
        return results.pop(0)

    target = FakeTarget()
    initial = status.ReloadOutcome(0.0, "start", True, "rev-1")
    reloader = reload.Reloader(tmp_path, load, target, exclude=lambda: [],  # type: ignore[arg-type]
                               initial=initial, loaded_hash="")

    async def scenario() -> list[bool | None]:
        out = []
        results.append((SimpleNamespace(flows={}), [], "rev-2"))
        out.append(await reloader.reload("watch"))  # files differ from "": applied
        out.append(await reloader.reload("watch"))  # nothing changed since: skipped
        flow.write_text("name: [a\n")
        error = Diagnostic(flow, 1, 7, "error", "invalid YAML")
        results.append((None, [error], "rev-3"))
        out.append(await reloader.reload("watch"))  # rejected
        results.append((None, [error], "rev-3"))
        out.append(await reloader.reload("sighup"))  # SIGHUP always loads
        return out

    assert asyncio.run(scenario()) == [True, None, False, False]
    assert target.applied == [("rev-2", "watch")]
    assert [o.revision for o in target.rejected] == ["rev-3", "rev-3"]
    assert reloader.last.ok is False
    assert reloader.last.errors == ("flows/a.yaml:1:7: error: invalid YAML",)
    assert reloader.counts == {"applied": 2, "rejected": 2}
    assert target.notifier.sent == ["RELOADING", "READY"] * 3


def test_reloader_survives_a_crashing_loader(tmp_path: Path) -> None:
    def load() -> Any:
        raise RuntimeError("loader bug")

    target = FakeTarget()
    reloader = reload.Reloader(tmp_path, load, target, exclude=lambda: [],  # type: ignore[arg-type]
                               initial=status.ReloadOutcome(0.0, "start", True, "rev-1"),
                               loaded_hash="")
    assert asyncio.run(reloader.reload("sighup")) is False
    assert target.applied == []
    assert "internal error while loading" in reloader.last.errors[0]


def test_docstring_examples_hold() -> None:
    """The examples in the daemon modules' docstrings are tests too."""
    import doctest

    from hookd.daemon import jobs, revision, sdnotify
    from hookd.telemetry import logs

    for module in (jobs, reload, status, sdnotify, logs, revision):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__
        assert result.attempted > 0, module.__name__


def test_replicas_share_one_config_directory_with_their_own_listeners(tmp_path: Path) -> None:
    """`--public`/`--admin` override hookd.yaml's listeners (docs/scale-out.md): two
    daemons on one config directory, each with its own ports and state directory."""
    config = tmp_path / "config"
    yaml_ports = write_http_config(config, tmp_path / "unused", {"a": http_flow("a")})
    procs = []
    try:
        for n in (1, 2):
            public, admin = free_port(), free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "hookd", "run", "--config", str(config),
                 "--state-dir", str(tmp_path / f"state{n}"),
                 "--public", f"127.0.0.1:{public}", "--admin", f"127.0.0.1:{admin}"],
                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
            procs.append((proc, public, admin))
        for _proc, public, admin in procs:
            for port in (public, admin):
                wait_until(lambda p=port: httpx.get(f"http://127.0.0.1:{p}/readyz").status_code
                           in (200, 404), what=f"a listener on {port}")
        for port in yaml_ports:  # hookd.yaml's listeners are not used
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert (tmp_path / "state1").is_dir() and (tmp_path / "state2").is_dir()
        assert not (tmp_path / "unused").exists()
    finally:
        for proc, _, _ in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


def test_a_listener_override_that_is_not_host_port_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "hookd", "run", "--config", str(tmp_path),
                           "--public", "8080"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "'8080' is not HOST:PORT" in done.stderr


def test_the_daemon_docs_say_the_default_worker_is_a_child_process() -> None:
    """Issue 16 item 18: docs/daemon.md said "one process" while the worker is a child."""
    from hookd.config.model import Settings

    assert Settings(public_url="").worker_mode == "process"
    intro = " ".join((REPO / "docs" / "daemon.md").read_text().split("## ")[0].split())
    assert "One process" not in intro
    assert "by default a second, child process for the pipeline worker" in intro
