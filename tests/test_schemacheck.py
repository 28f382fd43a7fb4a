"""The JSON Schemas: valid schemas, the fast path agrees with jsonschema, plain messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
from jsonschema import Draft202012Validator

from hookd.config import schema as schemacheck
from hookd.config.yamlpos import parse

FLOW: dict[str, Any] = {"name": "f", "trigger": {"connector": "http"}, "steps": [{"log": "hi"}]}


def with_step(step: dict[str, Any]) -> dict[str, Any]:
    return {**FLOW, "steps": [step]}


VALID_FLOWS = [
    FLOW,
    with_step({"id": "a", "http": {"url": "x", "expect": 201}, "timeout": "1h30m", "retry": {"attempts": 2}}),
    with_step({"run": {"argv": ["a", 1, True], "max_output": "1MiB"}}),
    with_step({"log": {"message": "m", "level": "debug"}, "if": "x", "foreach": [1, 2]}),
    with_step({"notify": {"kind": "ntfy", "url": "u", "message": "m"}}),
    {**FLOW, "concurrency": None, "enabled": False, "payload_validation": "off"},
]
INVALID_FLOWS = [
    {"trigger": {}},
    {**FLOW, "extra": 1},
    {**FLOW, "name": "has space"},
    {**FLOW, "concurrency": 0},
    {**FLOW, "payload_validation": "maybe"},
    with_step({}),
    with_step({"log": "a", "set": {"x": 1}}),
    with_step({"log": "a", "timeout": "5 minutes"}),
    with_step({"log": "a", "timeout": -1}),
    with_step({"run": "rm -rf /"}),
    with_step({"run": []}),
    with_step({"run": {"argv": ["a"], "shell": True}}),
    with_step({"http": {"url": "x", "expect": 99}}),
    with_step({"http": {"url": "x", "expect": []}}),
    with_step({"set": {}}),
    with_step({"notify": {"kind": "sms", "url": "u", "message": "m"}}),
    with_step({"log": "a", "retry": {"attempts": 0}}),
    with_step({"id": "1st", "log": "a"}),
]


def test_the_shipped_schemas_are_valid_2020_12() -> None:
    for kind in schemacheck.KINDS:
        Draft202012Validator.check_schema(schemacheck.schema(kind))


@pytest.mark.parametrize("flow", VALID_FLOWS)
def test_fast_and_full_validators_accept_the_same_valid_flows(flow: dict[str, Any]) -> None:
    schemacheck.fast_validator("flow")(flow)
    assert list(schemacheck.validator("flow").iter_errors(flow)) == []


@pytest.mark.parametrize("flow", INVALID_FLOWS)
def test_the_fast_path_never_lets_through_what_jsonschema_rejects(flow: dict[str, Any]) -> None:
    assert list(schemacheck.validator("flow").iter_errors(flow))
    try:
        schemacheck.fast_validator("flow")(flow)
    except fastjsonschema.JsonSchemaException:
        return
    assert not schemacheck._one_of_keys_ok("flow", flow)  # the one rule checked in Python


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("trigger: {connector: http}\nnmae: x\n", (2, 1, "nmae", "unknown key 'nmae'", "did you mean 'name'?")),
        ("name: f\n", (1, 1, "", "missing required key 'trigger'", "")),
        ("trigger: {connector: 3}\n", (1, 22, "trigger.connector", "should be a string, not the number 3", "")),
        ("trigger: {connector: http}\npayload_validation: rejct\n",
         (2, 21, "payload_validation", "'rejct' is not one of: reject, warn, off", "did you mean 'reject'?")),
        ("trigger: {connector: http}\nsteps:\n  - log: a\n    timeout: soon\n",
         (4, 14, "steps[0].timeout", "'soon' is not a duration", "a number of seconds, or e.g. 30s, 5m, 1h30m, 2d")),
        ("trigger: {connector: http}\nsteps:\n  - run: ls -l\n",
         (3, 10, "steps[0].run", "should be a list or a mapping, not the string 'ls -l'", "run takes an argv list")),
        ("trigger: {connector: http}\nsteps:\n  - http: {url: x, expect: 700}\n",
         (3, 28, "steps[0].http.expect", "700 should be at most 599", "")),
        ("trigger: {connector: http}\nsteps:\n  - log: {message: m, levl: info}\n",
         (3, 23, "steps[0].log.levl", "unknown key 'levl'", "did you mean 'level'?")),
    ],
)
def test_errors_are_explained_at_the_right_place(yaml_text: str, expected: tuple[Any, ...]) -> None:
    doc, _ = parse(yaml_text, Path("f.yaml"))
    assert doc is not None
    [d] = schemacheck.validate("flow", doc.data, doc)
    line, col, key, message, hint = expected
    assert (d.line, d.col, d.key, d.message) == (line, col, key, message)
    assert d.hint.startswith(hint)


def test_validators_touch_no_cache_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled validators are never written to, or read from, a cache directory."""
    for name in ("XDG_CACHE_HOME", "CACHE_DIRECTORY", "HOME"):
        monkeypatch.setenv(name, str(tmp_path))
    schemacheck.fast_validator.cache_clear()
    try:
        validate = schemacheck.fast_validator("flow")
        validate(FLOW)
        with pytest.raises(fastjsonschema.JsonSchemaException):
            validate({"name": "f"})
        assert list(tmp_path.rglob("*")) == []
    finally:
        schemacheck.fast_validator.cache_clear()
