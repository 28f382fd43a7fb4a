"""The ``log`` step: one structured log line (executor: `hookd.runs.actions.log`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hookd.config.actions.spec import ActionSpec

if TYPE_CHECKING:
    from hookd.config.model import Value


@dataclass(frozen=True)
class LogAction:
    message: Value
    fields: Mapping[str, Value] = field(default_factory=dict)
    level: str = "info"


SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string"},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["message"],
            "properties": {
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": True},
                "level": {"enum": ["debug", "info", "warning", "error"],
                          "description": "Default info."},
            },
        },
    ]
}


def build(lg: str | Mapping[str, Any]) -> LogAction:
    if isinstance(lg, str):
        return LogAction(message=lg)
    return LogAction(message=lg["message"], fields=dict(lg.get("fields") or {}),
                     level=lg.get("level", "info"))


SPEC = ActionSpec("log", LogAction, SCHEMA, build)
