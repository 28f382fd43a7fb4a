"""The action table of the config layer, the executors' table, the model and the flow schema agree.

A new action is a module in hookd/config/actions, a module in hookd/runs/actions and a
line in each table (HACKING.md, "A new action"); these tests fail when one is missing.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from hookd.config import actions, model
from hookd.config import schema as schemacheck
from hookd.config.loader import build_action
from hookd.config.yamlpos import parse
from hookd.runs.actions import executors

FLOW_SCHEMA = Path(schemacheck.__file__).parent / "schemas" / "flow.schema.json"


def test_every_declared_action_has_an_executor_and_no_executor_is_undeclared() -> None:
    assert list(executors()) == list(actions.ACTIONS)


def test_the_model_union_is_the_table() -> None:
    assert typing.get_args(model.Action) == tuple(s.input for s in actions.ACTIONS.values())


@pytest.mark.parametrize("kind", list(actions.ACTIONS))
def test_the_flow_schema_says_what_each_action_declares(kind: str) -> None:
    shipped = schemacheck.schema("flow")
    parts = actions.step_schema_parts()
    assert shipped["$defs"][kind] == parts["defs"][kind], (
        f"{FLOW_SCHEMA.name} $defs.{kind} differs from hookd/config/actions/{kind}.py SCHEMA: "
        "copy the fragment into the file (editors read the file)")
    assert shipped["$defs"]["step"]["properties"][kind] == parts["properties"][kind]


def test_the_step_lists_exactly_the_table_as_its_one_of_keys() -> None:
    step = schemacheck.schema("flow")["$defs"]["step"]
    parts = actions.step_schema_parts()
    assert step["x-hookd-one-of-keys"] == parts["one_of_keys"]
    assert step["oneOf"] == parts["one_of"]
    non_actions = {"id", "if", "foreach", "timeout", "retry", "continue_on_error"}
    assert set(step["properties"]) - non_actions == set(actions.ACTIONS)


EXAMPLES = {
    "http": {"url": "https://x/{{ trigger.body.a }}", "body": {"k": 1}, "expect": 201},
    "call": {"connector": "github", "operation": "CreateIssueComment",
             "parameters": {"owner": "o"}},
    "run": ["/bin/echo", "hi"],
    "log": "hello",
    "set": {"a": 1},
    "notify": {"kind": "ntfy", "url": "https://ntfy.sh/t", "message": "m"},
}


@pytest.mark.parametrize("kind", list(actions.ACTIONS))
def test_each_kind_builds_its_input_from_a_schema_valid_step(kind: str) -> None:
    step = {"id": "s", kind: EXAMPLES[kind]}
    flow = {"name": "f", "trigger": {"connector": "http"}, "steps": [step]}
    doc, _ = parse("flow: 1\n", Path("f.yaml"))
    assert doc is not None
    assert schemacheck.validate("flow", flow, doc) == []
    built = build_action(step)
    assert isinstance(built, actions.ACTIONS[kind].input)
    assert dataclasses.is_dataclass(built)
    assert model.Step("s", built).kind == kind
