"""The step actions as configuration: one module per kind, one table (`ACTIONS`).

Each module (``http``, ``call``, ``run``, ``log``, ``set``, ``notify``) declares its kind's
YAML key, input dataclass, ``flow.schema.json`` fragment and builder in one `ActionSpec`.
This layer is pure (below `hookd.runs`); the executors live in `hookd.runs.actions`, one
module per kind under the same name, in a table of their own. ``tests/test_action_registry``
checks that the two tables, `hookd.config.model.Action` and the flow schema agree, so a
new action is a module here, a module there and a line in each table (HACKING.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hookd.config.actions import call, http, log, notify, run
from hookd.config.actions import set as set_
from hookd.config.actions.spec import ActionSpec

# The order is the order of the schema's "exactly one of" keys and of error messages.
ACTIONS: Mapping[str, ActionSpec[Any]] = {
    spec.kind: spec for spec in (http.SPEC, call.SPEC, run.SPEC, log.SPEC, set_.SPEC, notify.SPEC)
}

_KIND_OF: Mapping[type, str] = {spec.input: spec.kind for spec in ACTIONS.values()}


def kind_of(action: object) -> str:
    """The step key of an action input (``HttpAction(...)`` → ``"http"``)."""
    return _KIND_OF[type(action)]


def build(step: Mapping[str, Any]) -> Any:
    """The action input of a schema-valid step (exactly one action key)."""
    for kind, spec in ACTIONS.items():
        if kind in step:
            return spec.build(step[kind])
    raise ValueError(f"a step needs an action: one of {', '.join(ACTIONS)}")


def step_schema_parts() -> dict[str, Any]:
    """What ``flow.schema.json`` must say about actions, from the table (for the test and
    for whoever edits the file): each kind's ``$defs`` entry, the step's property that
    points at it, ``x-hookd-one-of-keys`` and the ``oneOf`` of required keys."""
    return {
        "defs": {kind: dict(spec.schema) for kind, spec in ACTIONS.items()},
        "properties": {kind: {"$ref": f"#/$defs/{kind}"} for kind in ACTIONS},
        "one_of_keys": list(ACTIONS),
        "one_of": [{"required": [kind]} for kind in ACTIONS],
    }
