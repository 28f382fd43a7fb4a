"""End to end: the `hookd plan/apply/subscriptions/teardown` commands, as processes, against
the fake GitHub on 127.0.0.1 with a real config directory and a real SQLite state."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hookd.cli import main as cli
from hookd.reconcile.executor import PAUSE_ENV
from hookd.store.sqlite.db import open_db
from hookd.store.sqlite.subscriptions import SubscriptionStore
from tests.fakes.github import FakeGitHub, serve, serve_app

REPO = Path(__file__).resolve().parent.parent
CONNECTOR = Path(__file__).resolve().parent / "data" / "reconcile" / "connectors" / "github"
TOKEN = "ghp_e2e_token_value"


class Receiver:
    """Stands in for hookd's public listener: records what upstreams deliver."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.received.append((request.url.path, dict(request.headers), await request.body()))
            return Response(status_code=202)

        return Starlette(routes=[Route("/hooks/{sub}/{token}", hook, methods=["POST"])])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    receiver = Receiver()
    with serve(FakeGitHub(token=TOKEN, ping=True)) as gh, serve_app(receiver.app()) as public:
        cfg = tmp_path / "config"
        (cfg / "flows").mkdir(parents=True)
        (cfg / "connections").mkdir()
        shutil.copytree(CONNECTOR, cfg / "connectors" / "github")
        (cfg / "hookd.yaml").write_text(
            f"public_url: {public}\nstate_dir: {tmp_path / 'state'}\n"
            "reconcile:\n  max_deletes: 2\n  retries: 1\n")
        (cfg / "connections" / "gh.yaml").write_text(
            f"connector: github\nbase_url: {gh.base_url}\nparameters:\n  token: ${{env:GH_TOKEN}}\n")
        yield {"gh": gh, "cfg": cfg, "state": tmp_path / "state", "receiver": receiver,
               "public": public}


def write_flow(cfg: Path, name: str, events: list[str], repo: str = "r") -> None:
    (cfg / "flows" / f"{name}.yaml").write_text(
        f"name: {name}\ntrigger:\n  connector: github\n  operation: webhook-trigger\n"
        f"  connection: gh\n  parameters: {{owner: o, repo: {repo}}}\n"
        f"  body: {{events: {json.dumps(events)}}}\n"
        "steps:\n  - id: note\n    log: {message: hello}\n")


def hookd(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the `hookd` command line in this process (the same `cli.main` the console
    script calls; a subprocess per step would cost a second each on a busy machine — the
    crash test below does use a real process)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(["hookd", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GH_TOKEN", TOKEN)
    monkeypatch.setenv("NO_COLOR", "1")


def rows(state: Path) -> list[Any]:
    conn = open_db(state)
    try:
        return SubscriptionStore(conn).all()
    finally:
        conn.close()


def test_apply_lifecycle_with_plan_before_each_step(world: dict[str, Any]) -> None:
    gh, cfg, state = world["gh"], world["cfg"], world["state"]
    for name, events in (("alpha", ["push"]), ("beta", ["issues"]), ("gamma", ["release"])):
        write_flow(cfg, name, events)

    # 1. plan shows three creates and changes nothing; apply creates three hooks.
    plan = hookd("plan", str(cfg))
    assert plan.returncode == 3, plan.stderr
    assert plan.stdout.count("  + ") == 3 and "Plan: 3 to create" in plan.stdout
    assert gh.write_requests == 0 and not (state / "hookd.db").exists()
    # The exact request under each create: method, URL, headers, body; secrets masked.
    assert plan.stdout.count(f"      POST {gh.base_url}/repos/o/r/hooks\n") == 3
    assert "        Authorization: Bearer ***\n" in plan.stdout
    assert "        User-Agent: hookd/" in plan.stdout
    assert '"url": "' + world["public"] + "/hooks/" in plan.stdout and '"secret": "***"' in plan.stdout
    applied = hookd("apply", str(cfg))
    assert applied.returncode == 0, applied.stderr + applied.stdout
    assert applied.stdout.count("created") == 3
    assert len(gh.hooks) == 3
    recorded = {r.flow: r for r in rows(state)}
    for hook in gh.hooks.values():
        sub_id = hook.config["url"].split("/")[-2]
        row = next(r for r in recorded.values() if r.id == sub_id)
        assert hook.config["url"].startswith(world["public"] + f"/hooks/{sub_id}/hkd1_")
        assert hook.config["secret"] == row.secret and row.status == "active"
        assert hook.config["content_type"] == "json" and hook.active
    # Secrets never in output.
    for out in (plan.stdout, plan.stderr, applied.stdout, applied.stderr):
        assert TOKEN not in out and "hkd1_" not in out
        assert all(r.secret not in out for r in recorded.values())
    # The fake pinged each new hook, signed with the secret hookd gave it.
    deadline = time.monotonic() + 5
    while len(world["receiver"].received) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    for path, headers, body in world["receiver"].received:
        row = next(r for r in recorded.values() if path.split("/")[2] == r.id)
        expected = "sha256=" + hmac.new(row.secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-github-event"] == "ping"
        assert headers["x-hub-signature-256"] == expected

    # 2. Nothing changed: plan says so (exit 0), apply sends no write request.
    gh.reset_counters()
    assert hookd("plan", str(cfg)).returncode == 0
    again = hookd("apply", str(cfg))
    assert again.returncode == 0 and "No changes" in again.stdout
    assert gh.write_requests == 0

    # 3. Remove one flow: plan shows the delete; apply deletes exactly that hook via Location.
    (cfg / "flows" / "beta.yaml").unlink()
    plan = hookd("plan", str(cfg))
    assert plan.returncode == 3 and "  - beta" in plan.stdout and "flow removed" in plan.stdout
    gh.reset_counters()
    assert hookd("apply", str(cfg)).returncode == 0
    beta = recorded["beta"]
    assert [m for m in gh.log if m[0] != "GET"] == [
        ("DELETE", beta.location.removeprefix(gh.base_url))]  # type: ignore[union-attr]
    assert sorted(h.events[0] for h in gh.hooks.values()) == ["push", "release"]

    # 4. Change a flow's events: plan shows a replace; apply creates the new, deletes the old.
    write_flow(cfg, "alpha", ["push", "pull_request"])
    plan = hookd("plan", str(cfg), "--format", "json")
    data = json.loads(plan.stdout)
    assert plan.returncode == 3
    assert [(i["action"], i["flow"], i["replaces"]) for i in data["items"] if i["action"] != "keep"] \
        == [("replace", "alpha", recorded["alpha"].id)]
    (replace,) = [i for i in data["items"] if i["action"] == "replace"]
    create, delete = replace["requests"]
    assert (create["method"], create["url"]) == ("POST", f"{gh.base_url}/repos/o/r/hooks")
    assert create["body"]["events"] == ["push", "pull_request"]
    assert create["headers"]["Authorization"] == "Bearer ***"
    assert (delete["method"], delete["url"]) == ("DELETE", recorded["alpha"].location)
    assert TOKEN not in plan.stdout and "hkd1_" not in plan.stdout
    gh.reset_counters()
    assert hookd("apply", str(cfg)).returncode == 0
    assert [m[0] for m in gh.log if m[0] != "GET"] == ["POST", "DELETE"]
    assert sorted(tuple(h.events) for h in gh.hooks.values()) == [("push", "pull_request"),
                                                                  ("release",)]

    # 5. `hookd subscriptions` lists them without secrets.
    listing = hookd("subscriptions", str(cfg))
    assert listing.returncode == 0 and "alpha" in listing.stdout and "active" in listing.stdout
    assert all(r.secret not in listing.stdout for r in rows(state))

    # 6. teardown refuses without confirmation, then deletes everything hookd owns.
    other = gh.add_hook("o", "r", "https://ci.example.com/hook")
    refused = hookd("teardown", str(cfg))
    assert refused.returncode == 2 and len(gh.hooks) == 3
    done = hookd("teardown", str(cfg), "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(gh.hooks) == [other.id] and rows(state) == []


def test_kill_between_upstream_201_and_local_write_then_apply_adopts(
        world: dict[str, Any], tmp_path: Path) -> None:
    gh, cfg, state = world["gh"], world["cfg"], world["state"]
    write_flow(cfg, "alpha", ["push"])
    marker = tmp_path / "paused"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hookd", "apply", str(cfg)], cwd=REPO,
        env={**os.environ, "GH_TOKEN": TOKEN, PAUSE_ENV: str(marker)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # after GitHub's 201, before the row says active
    finally:
        if proc.poll() is None:
            proc.kill()  # never leave it hanging if an assertion above failed
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert len(gh.hooks) == 1
    assert [r.status for r in rows(state)] == ["pending"]

    plan = hookd("plan", str(cfg))
    assert plan.returncode == 3 and "to adopt" in plan.stdout
    gh.reset_counters()
    applied = hookd("apply", str(cfg))
    assert applied.returncode == 0 and "adopted" in applied.stdout
    assert gh.write_requests == 0 and len(gh.hooks) == 1
    (row,) = rows(state)
    assert row.status == "active" and row.upstream_id == str(next(iter(gh.hooks)))


def test_broken_config_deletes_nothing_and_max_deletes_blocks(world: dict[str, Any]) -> None:
    gh, cfg = world["gh"], world["cfg"]
    for n in range(4):
        write_flow(cfg, f"f{n}", ["push"])
    assert hookd("apply", str(cfg)).returncode == 0 and len(gh.hooks) == 4

    # A YAML syntax error in one file: nothing is planned, nothing deleted.
    for n in range(1, 4):
        (cfg / "flows" / f"f{n}.yaml").unlink()
    (cfg / "flows" / "f0.yaml").write_text("name: f0\ntrigger: {connector: github\n")
    gh.reset_counters()
    for command in ("plan", "apply"):
        result = hookd(command, str(cfg))
        assert result.returncode == 1
        assert "f0.yaml:" in result.stderr and "nothing was planned or changed" in result.stderr
    assert gh.requests == 0 and len(gh.hooks) == 4

    # Fixed, but three flows really removed: max_deletes (2) blocks the third delete.
    write_flow(cfg, "f0", ["push"])
    result = hookd("apply", str(cfg))
    assert result.returncode == 3 and "--allow-deletes" in result.stdout
    assert len(gh.hooks) == 2
    result = hookd("apply", str(cfg), "--allow-deletes", "5")
    assert result.returncode == 0 and len(gh.hooks) == 1


def test_subscriptions_lists_request_trigger_urls_and_store_rows(world: dict[str, Any]) -> None:
    cfg, state = world["cfg"], world["state"]
    write_flow(cfg, "alpha", ["push"])
    (cfg / "flows" / "echo.yaml").write_text(
        "name: echo\ntrigger: {connector: http}\nsteps:\n  - id: s\n    log: {message: hi}\n")
    assert hookd("apply", str(cfg)).returncode == 0
    assert [r.flow for r in rows(state)] == ["alpha"]  # nothing upstream for `http`
    listing = hookd("subscriptions", str(cfg), "--format", "json")
    data = json.loads(listing.stdout)
    assert [(s["flow"], s["status"]) for s in data["subscriptions"]] == [("alpha", "active")]
    assert "secret" not in data["subscriptions"][0]
    (route,) = data["request_triggers"]
    assert route["flow"] == "echo"
    assert route["callback_url"].startswith(world["public"] + "/hooks/echo-")


def test_signed_delivery_on_demand_reaches_the_callback_url(world: dict[str, Any]) -> None:
    gh, cfg, state = world["gh"], world["cfg"], world["state"]
    write_flow(cfg, "alpha", ["push"])
    assert hookd("apply", str(cfg)).returncode == 0
    (hook,) = gh.hooks.values()
    (row,) = rows(state)
    payload = (REPO / "tests" / "data" / "github" / "push.0.json")
    body = json.loads(payload.read_text()) if payload.exists() else {"ref": "refs/heads/main"}
    assert gh.deliver(hook.id, "push", body).status_code == 202
    path, headers, raw = next(r for r in world["receiver"].received
                              if r[1]["x-github-event"] == "push")  # the ping may come too
    assert path.startswith(f"/hooks/{row.id}/hkd1_")
    expected = "sha256=" + hmac.new(row.secret.encode(), raw, hashlib.sha256).hexdigest()
    assert headers["x-hub-signature-256"] == expected


def test_plan_is_coloured_only_on_a_terminal_and_progress_is_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from hookd.cli.commands.apply import Progress
    from hookd.cli.commands.plan import render_plan, use_color
    from hookd.subscriptions.plan import Observed, plan
    from tests.test_plan import row

    the_plan = plan([], [row("a-1")], Observed(), max_deletes=5)
    assert "\033[31m" in render_plan(the_plan, color=True)
    assert "\033" not in render_plan(the_plan, color=False)

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert use_color(Tty()) and not use_color(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(Tty())

    log = io.StringIO()
    progress = Progress(log)
    for done in range(1, 201):
        progress(done, 200)
    lines = log.getvalue().splitlines()
    assert 10 <= len(lines) <= 11 and lines[-1].startswith("apply: 200/200 done")
    quiet = io.StringIO()
    Progress(quiet)(1, 3)  # few items: no progress line
    assert quiet.getvalue() == ""


def test_a_never_created_subscription_is_forgotten_once_its_flow_is_removed(
        world: dict[str, Any]) -> None:
    """Issue 16 item 14: creates and lists fail (GitHub answering 500); once the flow is
    removed, `apply` forgets the record instead of failing on it for ever."""
    gh, cfg, state = world["gh"], world["cfg"], world["state"]
    gh.faults.error_500 = 1.0
    write_flow(cfg, "doomed", ["push"])
    result = hookd("apply", str(cfg))
    assert result.returncode == 1
    (row,) = rows(state)
    assert row.status == "pending" and row.last_error and not row.upstream_id

    (cfg / "flows" / "doomed.yaml").unlink()
    planned = hookd("plan", str(cfg))
    assert "never created upstream" in planned.stdout and "500" in planned.stdout
    result = hookd("apply", str(cfg))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dropped record doomed" in result.stdout
    assert "unmanageable" not in result.stdout + result.stderr
    assert rows(state) == []

    # The same for teardown, which plans with no flows at all.
    write_flow(cfg, "doomed", ["push"])
    assert hookd("apply", str(cfg)).returncode == 1 and len(rows(state)) == 1
    done = hookd("teardown", str(cfg), "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(state) == [] and gh.hooks == {}


def test_subscriptions_forget_drops_a_record_and_guards_a_live_hook(
        world: dict[str, Any]) -> None:
    gh, cfg, state = world["gh"], world["cfg"], world["state"]
    write_flow(cfg, "live", ["push"])
    assert hookd("apply", str(cfg)).returncode == 0
    (row,) = rows(state)
    refused = hookd("subscriptions", "forget", row.id, "-c", str(cfg))
    assert refused.returncode == 1 and rows(state) == [row]
    assert f"upstream id {row.upstream_id}" in refused.stderr and "--force" in refused.stderr
    assert "hookd apply" in refused.stderr

    forced = hookd("subscriptions", "forget", row.id, "-c", str(cfg), "--force")
    assert forced.returncode == 0 and rows(state) == []
    assert f"forgot subscription {row.id}: flow live" in forced.stdout
    assert "left upstream as it is" in forced.stdout
    assert len(gh.hooks) == 1  # no upstream call

    # A record with nothing upstream (as an unmanageable one): forgotten without --force,
    # also while a flow file is broken (only state_dir is read).
    conn = open_db(state)
    SubscriptionStore(conn).upsert(dataclasses.replace(
        row, id="gone-0123456789", location=None, upstream_id=None, status="orphaned",
        last_error="unmanageable: cannot delete (…)"))
    conn.close()
    (cfg / "flows" / "live.yaml").write_text("name: [broken\n")
    done = hookd("subscriptions", "forget", "gone-0123456789", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "status orphaned" in done.stdout and "last error was: unmanageable" in done.stdout
    assert rows(state) == []
    unknown = hookd("subscriptions", "forget", "gone-0123456789", "-c", str(cfg))
    assert unknown.returncode == 1 and "no subscription 'gone-0123456789'" in unknown.stderr


def test_an_empty_flow_file_holds_deletes_back_in_apply(world: dict[str, Any]) -> None:
    """Issue 16 item 2 without a running daemon (or at its start): there is no earlier
    config to compare with, so while a flow file is empty no hook is deleted."""
    gh, cfg = world["gh"], world["cfg"]
    write_flow(cfg, "one", ["push"])
    assert hookd("apply", str(cfg)).returncode == 0 and len(gh.hooks) == 1
    (cfg / "flows" / "one.yaml").write_text("# name: one  (commented out by mistake)\n")
    result = hookd("apply", str(cfg), "--allow-deletes", "5")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "flow file flows/one.yaml is empty" in result.stdout and len(gh.hooks) == 1
    (cfg / "flows" / "one.yaml").unlink()
    assert hookd("apply", str(cfg)).returncode == 0 and gh.hooks == {}


@pytest.mark.parametrize("declared", [True, False], ids=["update-operation", "recreate"])
def test_settings_changed_upstream_are_shown_by_plan_and_set_back_by_apply(
        world: dict[str, Any], declared: bool) -> None:
    """With x-hookd-update (the built-in github: PATCH) the hook is updated in place;
    without, it is deleted and created again under the same subscription."""
    from hookd.connectors.loader import builtin_dir

    gh, cfg = world["gh"], world["cfg"]
    if declared:
        shutil.rmtree(cfg / "connectors" / "github")
        shutil.copytree(builtin_dir() / "github", cfg / "connectors" / "github")
    write_flow(cfg, "alpha", ["push", "release"])
    assert hookd("apply", str(cfg)).returncode == 0
    (hook,) = gh.hooks.values()
    hook.active, hook.events = False, ["issues"]  # someone edited it in GitHub's settings
    hook.config["content_type"] = "form"
    plan = hookd("plan", str(cfg))
    assert plan.returncode == 3, plan.stdout
    assert "to update (settings changed upstream) (1):" in plan.stdout
    assert 'active: false upstream, hookd wants true' in plan.stdout
    assert 'events: ["issues"] upstream, hookd wants ["push", "release"]' in plan.stdout
    assert 'config.content_type: "form" upstream, hookd wants "json"' in plan.stdout
    gh.reset_counters()
    applied = hookd("apply", str(cfg))
    assert applied.returncode == 0, applied.stdout
    assert [m for m, _ in gh.log if m != "GET"] == (["PATCH"] if declared else ["DELETE", "POST"])
    (now,) = gh.hooks.values()
    assert (now.id == hook.id) is declared
    assert (now.active, sorted(now.events), now.config["content_type"]) == (
        True, ["push", "release"], "json")
    assert now.config["url"] == hook.config["url"]  # the same subscription's callback URL
    assert hookd("plan", str(cfg)).returncode == 0
