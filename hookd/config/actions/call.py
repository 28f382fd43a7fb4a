"""The ``call`` step: one operation of a loaded connector (executor: `hookd.runs.actions.call`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hookd.config.actions.spec import ActionSpec

if TYPE_CHECKING:
    from hookd.config.model import Value


@dataclass(frozen=True)
class CallAction:
    connector: str
    operation: str
    connection: str | None
    parameters: Mapping[str, Value] = field(default_factory=dict)
    body: Value = None


SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["connector", "operation"],
    "properties": {
        "connector": {"type": "string", "minLength": 1},
        "operation": {"type": "string", "minLength": 1, "description": "operationId"},
        "connection": {"type": "string", "minLength": 1},
        "parameters": {"type": "object", "additionalProperties": True},
        "body": {},
    },
}


def build(c: Mapping[str, Any]) -> CallAction:
    return CallAction(
        connector=c["connector"],
        operation=c["operation"],
        connection=c.get("connection"),
        parameters=dict(c.get("parameters") or {}),
        body=c.get("body"),
    )


SPEC = ActionSpec("call", CallAction, SCHEMA, build)
