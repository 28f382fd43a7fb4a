"""Loading a config directory into the typed model, and `hookd check` on it.

Model tests use the sample connectors (tests/sample_connectors.py); the CLI tests run the
real `hookd check` with the built-in connectors, as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hookd.config.loader import load, load_config
from hookd.config.model import (
    CallAction,
    HttpAction,
    LogAction,
    NotifyAction,
    RunAction,
    SecretRef,
    SetAction,
)
from tests.configdir import write_config
from tests.sample_connectors import connectors

REPO = Path(__file__).resolve().parent.parent
BROKEN = REPO / "tests" / "data" / "configs" / "broken"


def test_shipped_config_loads_with_and_without_github_token() -> None:
    for env in ({}, {"GITHUB_TOKEN": "ghp_example"}):
        config, diagnostics = load_config(REPO / "config", connectors=connectors(), env=env)
        assert diagnostics == [] and config is not None
        assert set(config.flows) == {"echo", "github-push"}
        assert config.flows["echo"].trigger.operation == "request"  # the connector's only trigger
        assert not config.flows["github-push"].enabled
        assert config.connections["github"].parameters == {"token": SecretRef("env", "GITHUB_TOKEN")}


def test_enabling_the_github_flow_without_a_token_names_connection_and_flow(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "c")
    flow = tmp_path / "c" / "flows" / "github-push.yaml"
    flow.write_text(flow.read_text().replace("enabled: false", "enabled: true"))
    config, diagnostics = load_config(tmp_path / "c", connectors=connectors(), env={})
    assert config is None
    [d] = [d for d in diagnostics if d.is_error]
    assert (d.file.name, d.line, d.key) == ("github.yaml", 9, "parameters.token")
    assert d.message == ("secret ${env:GITHUB_TOKEN}: environment variable GITHUB_TOKEN is not set "
                         "(needed by connection 'github', used by flow 'github-push')")
    config, diagnostics = load_config(tmp_path / "c", connectors=connectors(), env={"GITHUB_TOKEN": "v"})
    assert config is not None
    # The example's public_url is local: fine for the http flow, not for GitHub.
    assert [d.message for d in diagnostics] == [
        "public_url http://127.0.0.1:8080 is a local address: api.github.com cannot deliver to it"]
    config, diagnostics = load_config(tmp_path / "c", connectors=connectors(), env={}, resolve_secrets=False)
    assert config is not None and not any(d.is_error for d in diagnostics)


def test_settings_defaults_units_and_state_dir(tmp_path: Path) -> None:
    write_config(tmp_path, settings="""\
        public_url: https://hooks.example.net/
        listen: {public: {port: 9000}}
        reconcile: {interval: 1h30m, timeout: 250ms, max_deletes: 0}
        limits: {max_body: 1MiB}
        retention: {max_age: 2d}
        env: [TOPIC]
        log: {format: json}
    """)
    config, diagnostics = load_config(tmp_path, connectors=connectors(), env={})
    assert diagnostics == [] and config is not None
    s = config.settings
    assert s.public_url == "https://hooks.example.net"
    assert (s.public.host, s.public.port, s.admin.port) == ("127.0.0.1", 9000, 8081)
    assert (s.reconcile.interval, s.reconcile.timeout, s.reconcile.max_deletes) == (5400.0, 0.25, 0)
    assert s.reconcile.concurrency == 8 and s.max_body == 1024 * 1024
    assert s.retention.max_age == 172800.0 and s.retention.max_runs == 100_000
    assert s.env_allow == ("TOPIC",) and s.log_format == "json" and s.log_level == "info"
    assert s.state_dir == tmp_path.absolute() / "state"
    assert s.worker_mode == "process"  # the pipeline worker in a child process by default
    assert config.revision == ""  # the daemon's to compute (hookd.daemon.revision)
    config, _ = load_config(tmp_path, connectors=connectors(), env={"STATE_DIRECTORY": "/var/lib/hookd"})
    assert config is not None and config.settings.state_dir == Path("/var/lib/hookd")
    (tmp_path / "hookd.yaml").write_text("public_url: http://x\nstate_dir: data\n")
    config, _ = load_config(tmp_path, connectors=connectors(), env={"STATE_DIRECTORY": "/var/lib/hookd"})
    assert config is not None and config.settings.state_dir == tmp_path.absolute() / "data"
    (tmp_path / "hookd.yaml").write_text("public_url: http://x\nworker: {mode: inline}\n")
    config, _ = load_config(tmp_path, connectors=connectors(), env={})
    assert config is not None and config.settings.worker_mode == "inline"
    (tmp_path / "hookd.yaml").write_text("public_url: http://x\nworker: {mode: thread}\n")
    config, diagnostics = load_config(tmp_path, connectors=connectors(), env={})
    assert config is None and any("worker" in str(d) for d in diagnostics)


def test_steps_become_typed_actions_with_defaults(tmp_path: Path) -> None:
    write_config(tmp_path, flows={"deploy": """\
        trigger: {connector: http}
        concurrency: 1
        payload_validation: reject
        verify_secret: ${file:secrets/hook}
        steps:
          - http: {url: "https://x/{{ trigger.body.a }}", body: {a: 1}, expect: 201}
          - http: {url: "https://x", method: put, expect: [200, 204]}
          - id: call
            call: {connector: github, operation: create-issue-comment, connection: github,
                   parameters: {owner: o, repo: r, issue_number: 1}, body: {body: hi}}
          - run: [/bin/echo, "{{ trigger.body.a }}"]
            timeout: 5m
            retry: {attempts: 3, delay: 2s}
            continue_on_error: true
          - run: {argv: [cat], stdin: "x", env: {A: b}, cwd: /tmp, max_output: 64KiB}
          - log: hello
          - log: {message: m, fields: {a: 1}, level: warning}
          - set: {x: 1}
          - notify: {kind: ntfy, url: "https://ntfy.sh/t", message: hi, title: T}
            if: "{{ true }}"
            foreach: "{{ [1, 2] }}"
    """})
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hook").write_text("s")
    config, diagnostics = load_config(tmp_path, connectors=connectors(), env={"GITHUB_TOKEN": "t"})
    assert diagnostics == [] and config is not None
    flow = config.flows["deploy"]  # named after the file
    assert (flow.concurrency, flow.payload_validation, flow.enabled) == (1, "reject", True)
    assert flow.verify_secret == SecretRef("file", str(tmp_path.absolute() / "secrets" / "hook"))
    steps = flow.steps
    assert [s.id for s in steps] == ["step1", "step2", "call", "step4", "step5", "step6", "step7", "step8", "step9"]
    assert steps[0].action == HttpAction("POST", "https://x/{{ trigger.body.a }}", body={"a": 1}, expect=(201,))
    assert steps[1].action == HttpAction("PUT", "https://x", expect=(200, 204))
    assert steps[2].action == CallAction("github", "create-issue-comment", "github",
                                         {"owner": "o", "repo": "r", "issue_number": 1}, {"body": "hi"})
    assert steps[3].action == RunAction(("/bin/echo", "{{ trigger.body.a }}"))
    assert (steps[3].timeout, steps[3].retry.attempts, steps[3].retry.delay) == (300.0, 3, 2.0)
    assert steps[3].continue_on_error and steps[3].retry.backoff == "exponential"
    assert steps[4].action == RunAction(("cat",), env={"A": "b"}, cwd="/tmp", stdin="x", max_output=65536)
    assert steps[5].action == LogAction("hello")
    assert steps[6].action == LogAction("m", {"a": 1}, "warning")
    assert steps[7].action == SetAction({"x": 1})
    assert steps[8].action == NotifyAction("ntfy", "https://ntfy.sh/t", "hi", "T")
    assert (steps[8].if_, steps[8].foreach, steps[8].kind) == ("{{ true }}", "{{ [1, 2] }}", "notify")
    assert steps[0].pos is not None and steps[0].pos.line == 6


def test_a_file_may_hold_a_list_of_flows_each_with_a_name(tmp_path: Path) -> None:
    write_config(tmp_path, flows={"many": """\
        - name: one
          trigger: {connector: http}
        - trigger: {connector: http}
    """})
    config, [d] = load_config(tmp_path, connectors=connectors(), env={})
    assert config is None
    assert (d.line, d.key, d.message) == (3, "[1]", "a flow in a list needs a 'name'")


def test_schema_errors_point_at_the_key_with_a_suggestion(tmp_path: Path) -> None:
    write_config(tmp_path, settings="public_url: ftp://x\nreconcile: {intervall: 5m}\nworkers: 0\n")
    _, diagnostics = load_config(tmp_path, connectors=connectors(), env={})
    assert [(d.line, d.col, d.key, d.message, d.hint) for d in diagnostics] == [
        (1, 13, "public_url", "'ftp://x' does not have the expected form", "an http:// or https:// URL"),
        (2, 13, "reconcile.intervall", "unknown key 'intervall'", "did you mean 'interval'?"),
        (3, 10, "workers", "0 should be at least 1", ""),
    ]


def test_missing_settings_file_and_unreadable_files(tmp_path: Path) -> None:
    write_config(tmp_path, settings=None)
    config, [d] = load_config(tmp_path, connectors=connectors(), env={})
    assert config is None and d.message == "no hookd.yaml in the config directory"
    result = load(tmp_path / "nope", connectors=connectors(), env={})
    assert result.io_error and result.config is None
    write_config(tmp_path)
    (tmp_path / "flows" / "dir.yaml").mkdir()  # cannot be read as a file
    result = load(tmp_path, connectors=connectors(), env={})
    assert result.io_error and "cannot read file" in result.diagnostics[0].message


def test_broken_example_names_each_problem_with_file_and_line() -> None:
    _, diagnostics = load_config(BROKEN, connectors=connectors(), env={"GITHUB_TOKEN": "t"})
    found = [(d.file.name, d.line, d.severity) for d in diagnostics]
    assert ("bad-yaml.yaml", 6, "error") in found  # where the unclosed quote starts
    assert ("unknown-connector.yaml", 3, "error") in found
    assert ("missing-parameter.yaml", 7, "error") in found
    assert ("template-path.yaml", 11, "warning") in found


# --------------------------------------------------------------------------- the CLI


def hookd(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_TOKEN", "HOOKD_CONFIG")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "hookd", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=60, check=False)


@pytest.fixture
def builtins() -> None:
    from hookd.connectors import loader as openapi

    found, _ = openapi.load_connectors(None)
    if not {"github", "http"} <= set(found):
        pytest.skip("built-in github/http connectors are not in the tree yet")


@pytest.mark.usefixtures("builtins")
def test_cli_shipped_config_is_clean_with_and_without_token() -> None:
    for env in ({}, {"GITHUB_TOKEN": "ghp_example"}):
        done = hookd("check", "config", env=env)
        assert (done.returncode, done.stdout) == (0, ""), done.stderr
        assert "ok (0 errors, 0 warnings)" in done.stderr


@pytest.mark.usefixtures("builtins")
def test_cli_broken_example_exits_1_with_file_line_for_each_problem() -> None:
    done = hookd("check", str(BROKEN), env={"GITHUB_TOKEN": "t"})
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    for expected in (
        "flows/bad-yaml.yaml:6:10: error: invalid YAML: while scanning a quoted scalar: found unexpected end of stream",
        "flows/unknown-connector.yaml:3:14: error: unknown connector 'gihub' (trigger.connector); hint: did you mean 'github'?",
        "flows/missing-parameter.yaml:7:5: error: missing required path parameter 'repo' of github/webhook-trigger",
        "flows/template-path.yaml:11:13: warning: trigger.body.pusher.nmae is not in the notification schema of "
        "github/webhook-trigger (steps[0].http.body); hint: did you mean 'name'?",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    assert lines == sorted(lines, key=lambda s: (s.split(":")[0], int(s.split(":")[1])))


@pytest.mark.usefixtures("builtins")
def test_cli_json_strict_and_offline_secrets(tmp_path: Path) -> None:
    write_config(tmp_path, flows={"f": """\
        trigger:
          connector: github
          connection: github
          operation: webhook-trigger
          parameters: {owner: o, repo: r}
        steps:
          - log: "{{ trigger.body.nope }}"
    """})
    done = hookd("check", "--format", "json", env={"HOOKD_CONFIG": str(tmp_path)})
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert (report["version"], report["ok"], report["errors"], report["warnings"]) == (1, False, 1, 1)
    secret, path = report["diagnostics"]
    assert secret == {"file": "connections/github.yaml", "line": 3, "col": 10, "severity": "error",
                      "message": secret["message"], "key": "parameters.token", "hint": secret["hint"]}
    assert "GITHUB_TOKEN" in secret["message"] and "flow 'f'" in secret["message"]
    assert path["file"] == "flows/f.yaml" and path["severity"] == "warning" and path["line"] == 7
    done = hookd("check", str(tmp_path), "--offline-secrets")
    assert done.returncode == 0 and "warning" in done.stdout
    done = hookd("check", str(tmp_path), "--offline-secrets", "--strict")
    assert done.returncode == 1 and ": error: trigger.body.nope" in done.stdout


@pytest.mark.parametrize("text", ["", "# commented out\n", "[]\n"])
def test_check_strict_fails_on_an_empty_flow_file(tmp_path: Path, text: str) -> None:
    (tmp_path / "hookd.yaml").write_text("public_url: https://hooks.example.net\n")
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "gone.yaml").write_text(text)
    done = hookd("check", str(tmp_path))
    assert done.returncode == 0 and "flows/gone.yaml:1:1: warning: empty flow file" in done.stdout
    assert "delete the file" in done.stdout
    done = hookd("check", str(tmp_path), "--strict")
    assert done.returncode == 1 and "flows/gone.yaml:1:1: error: empty flow file" in done.stdout


def test_a_bad_secret_reference_is_one_error_not_also_unknown_connection(tmp_path: Path) -> None:
    write_config(tmp_path, flows={"f": """\
        trigger:
          connector: github
          connection: github
          operation: webhook-trigger
          parameters: {owner: o, repo: r}
    """}, connections={"github": "connector: github\nparameters:\n  token: ${nope:X}\n",
                       "other": "connector: github\nparameters:\n  token: ${env:GITHUB_TOKEN}\n"})
    (tmp_path / "flows" / "g.yaml").write_text(
        "trigger: {connector: github, connection: gone, operation: webhook-trigger,"
        " parameters: {owner: o, repo: r}}\n")
    config, diagnostics = load_config(tmp_path, env={"GITHUB_TOKEN": "t"})
    assert config is None
    assert [(d.file.name, d.message.split(" in ")[0]) for d in diagnostics if d.is_error] == [
        ("github.yaml", "unknown secret kind 'nope'"),
        ("g.yaml", "unknown connection 'gone'")]  # a connection that does not exist still is


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    done = hookd("check", str(tmp_path / "missing"))
    assert done.returncode == 2 and "does not exist" in done.stderr
    done = hookd("check", "--format", "xml")
    assert done.returncode == 2


@pytest.mark.usefixtures("builtins")
def test_cli_never_prints_a_secret_value(tmp_path: Path) -> None:
    write_config(tmp_path, flows={"f": "trigger: {connector: github, connection: github}\n"})
    done = hookd("check", str(tmp_path), env={"GITHUB_TOKEN": "TOPSECRET-VALUE-123"})
    assert done.returncode == 1  # owner/repo missing
    assert "TOPSECRET" not in done.stdout + done.stderr


def test_secret_references_in_steps_become_secret_refs_resolved_at_run_time(tmp_path: Path) -> None:
    write_config(tmp_path, flows={"f": """\
        trigger: {connector: http}
        steps:
          - http:
              url: https://x
              headers: {Authorization: "${env:API_TOKEN}", X-Key: "${file:keys/x}"}
          - run: [/bin/deploy, "${credential:deploy-key}"]
    """})
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "x").write_text("k")
    env = {"API_TOKEN": "t", "CREDENTIALS_DIRECTORY": str(tmp_path / "keys")}
    (tmp_path / "keys" / "deploy-key").write_text("d")
    config, diagnostics = load_config(tmp_path, connectors=connectors(), env=env)
    assert diagnostics == [] and config is not None
    http, run = (s.action for s in config.flows["f"].steps)
    assert isinstance(http, HttpAction) and isinstance(run, RunAction)
    assert http.headers == {"Authorization": SecretRef("env", "API_TOKEN"),
                            "X-Key": SecretRef("file", str(tmp_path.absolute() / "keys" / "x"))}
    assert run.argv == ("/bin/deploy", SecretRef("credential", "deploy-key"))
    config, [d] = load_config(tmp_path, connectors=connectors(), env={"API_TOKEN": "t"})
    assert config is None and (d.line, d.key) == (6, "steps[1].run[1]")
    assert d.message.startswith("secret ${credential:deploy-key}: CREDENTIALS_DIRECTORY is not set")
    assert d.message.endswith("(needed by flow 'f')")


def test_a_reference_inside_a_longer_string_is_an_error_with_the_template_way(tmp_path: Path) -> None:
    write_config(tmp_path, flows={"f": """\
        trigger: {connector: http}
        steps:
          - http: {url: https://x, headers: {Authorization: "Bearer ${env:API_TOKEN}"}}
    """})
    config, [d] = load_config(tmp_path, connectors=connectors(), env={"API_TOKEN": "t"})
    assert config is None and (d.line, d.key) == (3, "steps[0].http.headers.Authorization")
    assert d.message == "${env:API_TOKEN} must be the whole value, not part of a string"
    assert "{{ secrets['env:TOKEN'] }}" in d.hint


def test_store_is_sqlite_unless_a_postgresql_url_or_reference_is_given(tmp_path: Path) -> None:
    from hookd.config.model import StoreSetting

    def store_of(line: str) -> tuple[object, list[str]]:
        root = write_config(tmp_path / str(abs(hash(line))),
                            settings=f"public_url: https://hooks.example.net\n{line}\n")
        config, diagnostics = load_config(root, connectors=connectors(), env={"GITHUB_TOKEN": "t"})
        return (config.settings.store if config else None), [d.format() for d in diagnostics]

    assert store_of("") == (StoreSetting(), [])
    assert store_of("store: sqlite") == (StoreSetting(), [])
    assert store_of("store: ${credential:hookd-db-url}") == (
        StoreSetting("postgresql", SecretRef("credential", "hookd-db-url")), [])
    assert store_of("store: postgresql://hookd@db.internal/hookd") == (
        StoreSetting("postgresql", "postgresql://hookd@db.internal/hookd"), [])
    # A password written into hookd.yaml works, with a warning that never repeats it.
    store, messages = store_of("store: postgresql://hookd:s3cret@db.internal/hookd")
    assert store == StoreSetting("postgresql", "postgresql://hookd:s3cret@db.internal/hookd")
    assert str(store) == "postgresql://hookd:***@db.internal/hookd"
    [warning] = messages
    assert "hookd.yaml:2:" in warning and "password" in warning and "s3cret" not in warning
    # Anything else is refused where it was written.
    store, messages = store_of("store: mysql://hookd:s3cret@db.internal/hookd")
    assert store is None
    [error] = messages
    assert "hookd.yaml:2:" in error and "postgresql://" in error and "s3cret" not in error


def test_claim_lease_defaults_to_30s_and_refuses_less_than_20s(tmp_path: Path) -> None:
    def lease_of(line: str) -> tuple[float | None, list[str]]:
        root = write_config(tmp_path / str(abs(hash(line))),
                            settings=f"public_url: https://hooks.example.net\n{line}\n")
        config, diagnostics = load_config(root, connectors=connectors(), env={})
        return (config.settings.claim_lease if config else None), [d.format() for d in diagnostics]

    assert lease_of("") == (30.0, [])
    assert lease_of("claim_lease: 1m") == (60.0, [])
    assert lease_of("claim_lease: 20") == (20.0, [])
    lease, [error] = lease_of("claim_lease: 10s")
    assert lease is None
    assert "hookd.yaml:2:14: error: claim_lease must be at least 20s" in error and "hint:" in error
    lease, [error] = lease_of("claim_lease: soon")
    assert lease is None and "hookd.yaml:2:" in error
