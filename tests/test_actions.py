"""hookd.runs.actions: each action against real processes and a real local HTTP server."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hookd.runs.actions import ActionContext, ActionError, as_text, executor
from hookd.runs.actions.notify import request_for
from hookd.runs.actions.run import base_env
from tests.fakes.sink import Sink

ECHO_ARGV = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


def run_action(kind: str, input: dict[str, Any], **ctx: Any) -> Any:
    async def go() -> Any:
        async with httpx.AsyncClient() as client:
            return await executor(kind)(input, ActionContext(http=client, flow="f",
                                                             run_id="r1", **ctx))
    return asyncio.run(go())


# --------------------------------------------------------------------------- run


def test_run_passes_hostile_payload_as_one_argument(tmp_path: Path) -> None:
    hostile = f'"; touch {tmp_path}/pwned1 #'
    subst = f"$(touch {tmp_path}/pwned2)"
    backtick = f"`touch {tmp_path}/pwned3`"
    out = run_action("run", {"argv": [*ECHO_ARGV, hostile, subst, backtick, "; rm -rf / #"]},
                     base_env=base_env({"PATH": "/usr/bin:/bin"}))
    assert json.loads(out["stdout"]) == [hostile, subst, backtick, "; rm -rf / #"]
    assert out["exit_code"] == 0
    assert list(tmp_path.iterdir()) == []  # nothing else ran


def test_run_env_stdin_cwd_and_minimal_base_env(tmp_path: Path) -> None:
    script = ("import os, sys, json; print(json.dumps({'cwd': os.getcwd(), 'in': sys.stdin.read(),"
              " 'v': os.environ.get('V'), 'secret': os.environ.get('GITHUB_TOKEN'),"
              " 'flow': os.environ.get('HOOKD_FLOW')}))")
    env = base_env({"PATH": "/usr/bin:/bin", "GITHUB_TOKEN": "t", "HOME": "/root"})
    out = run_action("run", {"argv": [sys.executable, "-c", script], "env": {"V": 5},
                             "stdin": {"a": 1}, "cwd": str(tmp_path)}, base_env=env)
    doc = json.loads(out["stdout"])
    assert doc == {"cwd": str(tmp_path), "in": '{"a": 1}', "v": "5", "secret": None, "flow": "f"}


def test_run_nonzero_exit_fails_with_output() -> None:
    with pytest.raises(ActionError) as info:
        run_action("run", {"argv": [sys.executable, "-c",
                                    "import sys; print('out'); sys.exit(3)"]})
    assert "status 3" in str(info.value) and info.value.retryable
    assert info.value.output["stdout"] == "out\n" and info.value.output["exit_code"] == 3


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie is killed, just not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# PIDFILE is replaced by the path, quoted ('...'): the child writes its pid there. It lets
# go of the output pipes, so that surviving is seen as surviving, not as a hung step.
TIMEOUT_SCRIPT = """
import os, subprocess, sys, time
child = "import os, time; os.close(1); os.close(2); " \\
        "open(PIDFILE + '.new', 'w').write(str(os.getpid())); " \\
        "os.rename(PIDFILE + '.new', PIDFILE); time.sleep(30)"
subprocess.Popen([sys.executable, "-c", child])
while not os.path.exists(PIDFILE):
    time.sleep(0.01)
time.sleep(30)
"""


def test_run_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The command starts a child that records its pid, waits until it has, then both sleep.
    script = TIMEOUT_SCRIPT.replace("PIDFILE", repr(str(pidfile)))
    started = time.monotonic()
    with pytest.raises(ActionError, match="timed out"):
        run_action("run", {"argv": [sys.executable, "-c", script]}, timeout=1.0)
    assert time.monotonic() - started < 5
    assert pidfile.exists(), "the command's child did not start within the step's timeout"
    pid = int(pidfile.read_text())
    assert _gone(pid, within=5.0), "the command's child survived the timeout"


def test_run_output_is_capped() -> None:
    out = run_action("run", {"argv": [sys.executable, "-c", "print('x' * 100000)"],
                             "max_output": 1000})
    assert len(out["stdout"]) == 1000 and out["truncated"] is True


def test_run_missing_program_is_permanent() -> None:
    with pytest.raises(ActionError) as info:
        run_action("run", {"argv": ["/nonexistent/program"]})
    assert not info.value.retryable


@pytest.mark.parametrize("argv", [[], None, "echo hi", [""]])
def test_run_rejects_bad_argv(argv: Any) -> None:
    with pytest.raises(ActionError):
        run_action("run", {"argv": argv})


# --------------------------------------------------------------------------- http


def test_http_json_body_query_headers(sink: Sink) -> None:
    out = run_action("http", {"method": "PUT", "url": sink.url + "/p", "query": {"q": 1},
                              "headers": {"X-A": True}, "body": {"k": [1, 2]}})
    got = sink.received[0]
    assert (got.method, got.path, got.headers["x-a"]) == ("PUT", "/p?q=1", "true")
    assert got.headers["content-type"] == "application/json" and got.json() == {"k": [1, 2]}
    assert out["status"] == 200 and out["json"] == {"ok": True, "n": 1}


def test_http_text_body_defaults_to_post(sink: Sink) -> None:
    run_action("http", {"url": sink.url, "body": "hello"})
    assert sink.received[0].method == "POST" and sink.received[0].text == "hello"
    assert sink.received[0].headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("status", "expect", "ok", "retryable"),
    [(200, (), True, None), (204, (), True, None), (200, (201,), False, False),
     (201, (201,), True, None), (404, (), False, False), (401, (), False, False),
     (429, (), False, True), (500, (), False, True), (503, (), False, True),
     (425, (), False, True), (408, (), False, True), (501, (), False, False),
     (302, (), False, False), (302, (302,), True, None)],
)
def test_http_status_classification(sink: Sink, status: int, expect: tuple[int, ...], ok: bool,
                                     retryable: bool | None) -> None:
    sink.default_status = status
    if ok:
        assert run_action("http", {"url": sink.url, "expect": list(expect)})["status"] == status
    else:
        with pytest.raises(ActionError) as info:
            run_action("http", {"url": sink.url, "expect": list(expect)})
        assert info.value.retryable is retryable
        assert info.value.output["status"] == status


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after"),
    [
        # The value an upstream may send that is neither seconds nor a date: the step
        # still fails with the target's answer as output, the wait is left to `retry`.
        (503, {"Retry-After": "soon"}, True, None),
        (503, {"Retry-After": "12"}, True, 12.0),
        (429, {"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, True, 0.0),
        # GitHub's primary rate limit answers 403 with x-ratelimit-remaining: 0.
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0"}, True, 0.0),
        (403, {}, False, None),
    ],
)
def test_http_retry_after_and_rate_limits(sink: Sink, status: int, headers: dict[str, str],
                                          retryable: bool, retry_after: float | None) -> None:
    sink.default_status, sink.headers = status, headers
    with pytest.raises(ActionError) as info:
        run_action("http", {"url": sink.url})
    assert info.value.retryable is retryable
    assert info.value.retry_after == retry_after
    assert info.value.output["status"] == status and info.value.output["json"]["n"] == 1


def test_http_connection_refused_is_retryable() -> None:
    with pytest.raises(ActionError) as info:
        run_action("http", {"url": "http://127.0.0.1:9/x?token=abc"})
    assert info.value.retryable and "token" not in str(info.value)


def test_http_rejects_non_http_url() -> None:
    with pytest.raises(ActionError) as info:
        run_action("http", {"url": "file:///etc/passwd"})
    assert not info.value.retryable


# --------------------------------------------------------------------------- notify


@pytest.mark.parametrize(
    ("kind", "title", "headers", "body"),
    [
        ("ntfy", "Deploy", {"Title": "Deploy"}, "done"),
        ("ntfy", None, {}, "done"),
        ("ntfy", "Déploiement", {"Title": "=?UTF-8?B?RMOpcGxvaWVtZW50?="}, "done"),
        ("slack", None, {}, {"text": "done"}),
        ("slack", "T", {}, {"text": "*T*\ndone"}),
        ("teams", "T", {}, {"text": "T\ndone"}),
        ("discord", None, {}, {"content": "done"}),
        ("webhook", "T", {}, {"title": "T", "message": "done"}),
    ],
)
def test_notify_payloads(kind: str, title: str | None, headers: dict[str, str], body: Any) -> None:
    assert request_for(kind, "done", title) == (headers, body)


def test_notify_ntfy_end_to_end(sink: Sink) -> None:
    run_action("notify", {"kind": "ntfy", "url": sink.url + "/topic", "message": "3 commits",
                          "title": "push"})
    got = sink.received[0]
    assert (got.path, got.text, got.headers["title"]) == ("/topic", "3 commits", "push")


# --------------------------------------------------------------------------- log, set


def test_log_writes_a_structured_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hookd.flow"):
        out = run_action("log", {"message": "hello", "fields": {"n": 2, "name": "x"},
                                 "level": "warning"})
    assert out == {"message": "hello", "fields": {"n": 2, "name": "x"}}
    [rec] = caplog.records
    assert rec.levelno == logging.WARNING and rec.getMessage() == "hello"
    assert rec.n == 2 and rec.field_name == "x" and rec.flow == "f"  # type: ignore[attr-defined]


def test_set_returns_values() -> None:
    assert run_action("set", {"values": {"a": [1]}}) == {"a": [1]}


@pytest.mark.parametrize(("value", "text"), [(None, ""), (True, "true"), (3, "3"),
                                             ({"a": 1}, '{"a":1}'), ("s", "s")])
def test_as_text(value: Any, text: str) -> None:
    assert as_text(value) == text


# --------------------------------------------------------------------------- call


@pytest.mark.parametrize("value", ["..", ".", "%2e%2E", "%252e%252e", ""])
def test_call_refuses_dot_segments_in_path_parameters(tmp_path: Path, value: str) -> None:
    """owner="..", repo=".." turned /repos/{owner}/{repo}/hooks into /hooks, with the
    connection's token (issue 16 item 7): refused before anything is sent."""
    import dataclasses

    from hookd.config import model
    from hookd.upstream.client import Upstream
    from tests.fakes.github import FakeGitHub, github_connector, serve
    from tests.pipeline_util import config

    with serve(FakeGitHub(token="tok-123")) as gh:
        connector = github_connector(base_url=gh.base_url)
        conn = model.Connection("gh", connector.name, {"token": "tok-123"})
        cfg = dataclasses.replace(config(tmp_path / "state", []),
                                  connectors={connector.name: connector}, connections={"gh": conn})
        gh.reset_counters()

        async def go() -> Any:
            async with httpx.AsyncClient() as client, Upstream() as upstream:
                ctx = ActionContext(http=client, config=cfg, upstream=upstream)
                return await executor("call")(
                    {"connector": connector.name, "operation": "list-hooks", "connection": "gh",
                     "parameters": {"owner": value, "repo": value}}, ctx)

        with pytest.raises(ActionError, match="not allowed as a path segment") as info:
            asyncio.run(go())
        assert not info.value.retryable
        assert gh.requests == 0


def test_call_invokes_a_connector_operation_on_the_fake_github(tmp_path: Path) -> None:
    import dataclasses

    from hookd.config import model
    from hookd.upstream.client import Upstream
    from tests.fakes.github import FakeGitHub, github_connector, serve
    from tests.pipeline_util import config

    with serve(FakeGitHub(token="tok-123")) as gh:
        gh.add_hook("acme", "app", "http://127.0.0.1:9/hooks/x")
        connector = github_connector(base_url=gh.base_url)
        good = model.Connection("gh", connector.name, {"token": "tok-123"})
        bad = model.Connection("gh-bad", connector.name, {"token": "wrong"})
        cfg = dataclasses.replace(config(tmp_path / "state", []),
                                  connectors={connector.name: connector},
                                  connections={"gh": good, "gh-bad": bad})

        async def go(connection: str) -> Any:
            async with httpx.AsyncClient() as client, Upstream() as upstream:
                ctx = ActionContext(http=client, config=cfg, upstream=upstream)
                return await executor("call")(
                    {"connector": connector.name, "operation": "list-hooks",
                     "connection": connection, "parameters": {"owner": "acme", "repo": "app"}},
                    ctx)

        out = asyncio.run(go("gh"))
        assert out["status"] == 200
        assert [h["config"]["url"] for h in out["json"]] == ["http://127.0.0.1:9/hooks/x"]
        with pytest.raises(ActionError) as info:
            asyncio.run(go("gh-bad"))
        assert not info.value.retryable and "tok-123" not in str(info.value)
        with pytest.raises(ActionError, match="unknown connection"):
            asyncio.run(go("nope"))
