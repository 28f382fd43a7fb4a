"""The ``run`` step: one program, argv only, never a shell (executor: `hookd.runs.actions.run`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hookd.config.actions.spec import ActionSpec
from hookd.config.units import parse_size

if TYPE_CHECKING:
    from hookd.config.model import Value

_ARGV = {"type": "array", "items": {"type": ["string", "number", "boolean"]}, "minItems": 1}


@dataclass(frozen=True)
class RunAction:
    argv: tuple[Value, ...]  # never a shell string
    env: Mapping[str, Value] = field(default_factory=dict)
    cwd: str | None = None
    stdin: Value = None
    max_output: int = 1024 * 1024


SCHEMA: dict[str, Any] = {
    "anyOf": [
        _ARGV,
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["argv"],
            "properties": {
                "argv": _ARGV,
                "env": {"type": "object", "additionalProperties": True},
                "cwd": {"type": "string"},
                "stdin": {},
                "max_output": {"$ref": "#/$defs/size",
                               "description": "Bytes of stdout/stderr kept (default 1MiB)."},
            },
        },
    ],
    "description": "An argv list (never a shell string), or a mapping with argv.",
}


def build(r: list[str] | Mapping[str, Any]) -> RunAction:
    if isinstance(r, list):
        return RunAction(argv=tuple(r))
    return RunAction(
        argv=tuple(r["argv"]),
        env=dict(r.get("env") or {}),
        cwd=r.get("cwd"),
        stdin=r.get("stdin"),
        max_output=parse_size(r.get("max_output", RunAction(argv=()).max_output)),
    )


SPEC = ActionSpec("run", RunAction, SCHEMA, build)
