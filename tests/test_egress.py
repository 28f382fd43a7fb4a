"""The egress policy of http and notify steps (`hookd.runs.egress`, issue 16 item 6).

Before: ``url: "http://127.0.0.1:19211{{ trigger.body.path }}"`` with
``path="@127.0.0.1:19202/api/runs"`` sent the request to the admin listener and stored
its answer as step output; a URL written straight at the admin port reached it too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from hookd.config.model import Egress, Listener
from hookd.runs.egress import Target, refusal, render_url
from tests.fakes.sink import Sink
from tests.test_daemon import Running, daemon_on, wait_until

__all__ = ["daemon_on"]  # a fixture


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


def flow_url(tmp_path: Path, name: str) -> str:
    from hookd.config.loader import load_config
    from hookd.subscriptions.desired import desired_subscriptions

    config, diagnostics = load_config(tmp_path / "config")
    assert config is not None, diagnostics
    secret = (tmp_path / "state" / "server.secret").read_bytes()
    (url,) = [d.callback_url for d in desired_subscriptions(config, secret) if d.flow == name]
    return url


def http_step_flow(name: str, url: str) -> str:
    return (f"name: {name}\ntrigger: {{connector: http}}\nsteps:\n"
            f"  - id: get\n    http: {{url: '{url}'}}\n")


def finished_run(hookd: Running, flow: str) -> dict[str, object]:
    def done() -> object:
        runs = [r for r in hookd.get(f"/api/runs?flow={flow}").json()["runs"]
                if r["status"] in ("succeeded", "failed")]
        return runs[0] if runs else None

    run = wait_until(done, what=f"a finished run of {flow}")
    return dict(hookd.get(f"/api/runs/{run['id']}").json())


def test_no_template_moves_a_step_to_the_admin_listener_or_another_host(
    daemon_on: Callable[..., Running], tmp_path: Path, sink: Sink
) -> None:
    other = Sink()  # an internal service a payload should not be able to reach
    try:
        base = sink.url
        hookd = daemon_on(texts={
            "attack": http_step_flow("attack", base + "{{ trigger.body.path }}"),
            "paths": http_step_flow("paths", base + "/hook/{{ trigger.body.p }}?q={{ trigger.body.p }}"),
        })
        admin = hookd.admin
        hookd.notify.wait_for("READY")
        # A url written straight at the admin port (its port is known only now).
        (tmp_path / "config" / "flows" / "direct.yaml").write_text(
            http_step_flow("direct", admin + "/api/runs"))
        wait_until(lambda: hookd.get("/api/status").json()["config"]["flows"] == 3,
                   what="the direct flow loaded")

        post = lambda flow, body: httpx.post(flow_url(tmp_path, flow), json=body, timeout=5)  # noqa: E731
        admin_port = admin.rsplit(":", 1)[1]
        assert post("attack", {"path": f"@127.0.0.1:{admin_port}/api/runs"}).status_code == 202
        run = finished_run(hookd, "attack")
        step = run["steps"][0]  # type: ignore[index]
        assert run["status"] == "failed"
        assert "hookd's own admin listener" in step["error"]
        assert step["output"] is None  # nothing from the admin listener was stored

        other_port = other.url.rsplit(":", 1)[1]
        assert post("attack", {"path": f"@127.0.0.1:{other_port}/x"}).status_code == 202
        wait_until(lambda: len([r for r in hookd.get("/api/runs?flow=attack").json()["runs"]
                                if r["status"] == "failed"]) == 2, what="second attack run")
        runs = hookd.get("/api/runs?flow=attack").json()["runs"]
        errors = [hookd.get(f"/api/runs/{r['id']}").json()["steps"][0]["error"] for r in runs]
        assert any("refused" in e and "comes from a template" in e and "admin" not in e
                   for e in errors), errors
        assert other.received == [] and sink.received == []

        # A literal host keeps working; a template in the path or query stays there.
        assert post("paths", {"p": "a/b?c=d&e#f"}).status_code == 202
        assert finished_run(hookd, "paths")["status"] == "succeeded"
        assert [r.path for r in sink.received] == ["/hook/a/b%3Fc=d&e%23f?q=a/b?c%3Dd%26e%23f"]

        assert post("direct", {}).status_code == 202
        direct = finished_run(hookd, "direct")
        assert direct["status"] == "failed"
        assert "hookd's own admin listener" in direct["steps"][0]["error"]  # type: ignore[index]
    finally:
        other.close()


OWN = {"public": Listener("127.0.0.1", 8080), "admin": Listener("0.0.0.0", 8081)}
LOOPBACK = [ipaddress.ip_address("127.0.0.1")]
PRIVATE = [ipaddress.ip_address("10.1.2.3")]
PUBLIC = [ipaddress.ip_address("93.184.215.14")]


@pytest.mark.parametrize(("target", "egress", "addresses", "local", "refused"), [
    # hookd's own listeners, whatever the url says
    (Target("http://127.0.0.1:8081/api/runs"), Egress(), LOOPBACK, LOOPBACK, "own admin"),
    (Target("http://localhost:8080/hooks/x/y"), Egress(), LOOPBACK, LOOPBACK, "own public"),
    (Target("http://[::ffff:127.0.0.1]:8081/"), Egress(),
     [ipaddress.ip_address("::ffff:127.0.0.1")], [], "own admin"),  # 127.0.0.1 to the kernel
    (Target("http://10.1.2.3:8081/"), Egress(), PRIVATE, PRIVATE, "own admin"),  # a local address
    (Target("http://10.1.2.3:8081/"), Egress(), PRIVATE, [], None),  # another machine
    (Target("http://0.0.0.0:8081/"), Egress(), [ipaddress.ip_address("0.0.0.0")], [], "own admin"),
    # literal hosts: as before
    (Target("http://127.0.0.1:9000/deploy"), Egress(deny_private=True), LOOPBACK, LOOPBACK, None),
    # templated hosts: egress.allow, deny_private, no userinfo
    (Target("https://api.example.com/x", True), Egress(), [], [], "not in egress.allow"),
    (Target("https://api.example.com/x", True), Egress(allow=("*.example.com",)), PUBLIC, [], None),
    (Target("https://a.example.com/x", True), Egress(allow=("*.example.com",), deny_private=True),
     PRIVATE, [], "non-public"),
    (Target("https://u:p@api.example.com/", True), Egress(allow=("api.example.com",)), [], [],
     "user:password"),
    (Target("file:///etc/passwd", True), Egress(allow=("*",)), [], [], "http:// or https://"),
])
def test_refusal(target: Target, egress: Egress, addresses: list[ipaddress.IPv4Address],
                 local: list[ipaddress.IPv4Address], refused: str | None) -> None:
    answer = refusal(target, egress, OWN, addresses, local)
    if refused is None:
        assert answer is None
    else:
        assert answer is not None and refused in answer


@pytest.mark.parametrize(("source", "templated"), [
    ("http://127.0.0.1:19211{{ trigger.body.path }}", True),  # the attack: host not ended
    ("https://{{ trigger.body.host }}/x", True),
    ("{{ env.HOOK_URL }}", True),
    ("https://h.example{% if true %}/x{% endif %}", True),
    ("https://h.example/{{ trigger.body.path }}", False),
    ("https://h.example?x={{ trigger.body.path }}", False),
])
def test_where_the_host_comes_from(source: str, templated: bool) -> None:
    ctx = {"trigger": {"body": {"path": "@evil.example/x", "host": "h"}}, "env": {"HOOK_URL": "https://x"}}
    target = render_url(source, ctx)
    assert target is not None and target.host_from_template is templated
    if not templated:
        assert httpx.URL(target.url).host == "h.example"


def test_check_warns_about_a_templated_host_without_egress_allow(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "flows").mkdir()
    (tmp_path / "hookd.yaml").write_text("public_url: https://hooks.example.net\n")
    (tmp_path / "flows" / "f.yaml").write_text(
        "name: f\ntrigger: {connector: http}\nsteps:\n"
        "  - id: a\n    http: {url: '{{ trigger.body.url }}'}\n"
        "  - id: b\n    http: {url: 'https://api.example.com/{{ trigger.body.p }}'}\n")
    shown = subprocess.run([sys.executable, "-m", "hookd", "check", str(tmp_path)],
                           capture_output=True, text=True, timeout=30)
    lines = [line for line in (shown.stdout + shown.stderr).splitlines()
             if "comes from a template" in line]
    assert len(lines) == 1 and "steps[0].http.url" in lines[0] and "f.yaml:5:" in lines[0]
    with (tmp_path / "hookd.yaml").open("a") as f:
        f.write("egress: {allow: ['*.example.com']}\n")
    again = subprocess.run([sys.executable, "-m", "hookd", "check", str(tmp_path)],
                           capture_output=True, text=True, timeout=30)
    assert "comes from a template" not in again.stdout + again.stderr


def test_notify_steps_follow_the_policy_too(tmp_path: Path, sink: Sink) -> None:
    """A notify step whose url comes from a payload is refused; written literally, or as
    a secret reference (the operator wrote it), it is sent."""
    from hookd.config import model
    from tests.pipeline_util import flow, step
    from tests.test_pipeline import Harness

    h = Harness(tmp_path / "state", environ={"SINK_URL": sink.url + "/from-secret"})
    f = flow("n", [
        step("literal", model.NotifyAction(kind="webhook", url=sink.url + "/literal",
                                           message="{{ trigger.body.m }}")),
        step("secret", model.NotifyAction(kind="webhook", url=model.SecretRef("env", "SINK_URL"),
                                          message="m")),
        step("payload", model.NotifyAction(kind="webhook", url="{{ trigger.body.url }}",
                                           message="m")),
    ])
    outcome, run_id = h.run(f, {"m": "hi", "url": sink.url + "/from-payload"})
    assert outcome.status == "failed"
    assert [r.path for r in sink.received] == ["/literal", "/from-secret"]
    run = h.store.get(run_id)
    assert run is not None
    assert "comes from a template and is not in egress.allow" in (run.steps[2].error or "")


def test_a_listener_on_port_0_is_known_by_the_port_it_got(tmp_path: Path) -> None:
    """``port: 0`` (any free port) must not hide the admin listener from the policy."""
    import json
    import os
    import re
    import subprocess
    import sys

    from tests.configdir import admin_headers
    from tests.test_daemon import free_port

    public = free_port()
    config = tmp_path / "config"
    (config / "flows").mkdir(parents=True)
    (config / "hookd.yaml").write_text(
        f"public_url: http://127.0.0.1:{public}\nstate_dir: {tmp_path / 'state'}\n"
        f"listen:\n  public: {{host: 127.0.0.1, port: {public}}}\n"
        "  admin: {host: 127.0.0.1, port: 0}\nlog: {format: json}\n")
    (config / "flows" / "attack.yaml").write_text(
        http_step_flow("attack", "http://127.0.0.1:9{{ trigger.body.path }}"))
    log = tmp_path / "hookd.log"
    proc = subprocess.Popen([sys.executable, "-m", "hookd", "run", "--config", str(config)],
                            stderr=log.open("w"), env={**os.environ, "HOOKD_WORKER": "inline"})
    try:
        ready = wait_until(lambda: next((json.loads(line) for line in log.read_text().splitlines()
                                         if '"hookd is ready"' in line), None), timeout=20,
                           what="ready")
        admin = "http://" + ready["admin"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", admin) and not admin.endswith(":0")
        port = admin.rsplit(":", 1)[1]
        answer = httpx.post(flow_url(tmp_path, "attack"), timeout=5,
                            json={"path": f"@127.0.0.1:{port}/api/runs"})
        assert answer.status_code == 202
        headers = admin_headers(tmp_path / "state")

        def failed() -> object:
            runs = httpx.get(admin + "/api/runs?status=failed", headers=headers, timeout=5)
            return runs.json()["runs"]

        (run,) = wait_until(failed, what="the run failed")
        doc = httpx.get(admin + f"/api/runs/{run['id']}", headers=headers, timeout=5).json()
        assert "hookd's own admin listener" in doc["steps"][0]["error"]
    finally:
        proc.terminate()
        proc.wait(15)
