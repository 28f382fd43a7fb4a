"""The ``set`` step: named values as the step's output (executor: `hookd.runs.actions.set`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hookd.config.actions.spec import ActionSpec

if TYPE_CHECKING:
    from hookd.config.model import Value


@dataclass(frozen=True)
class SetAction:
    values: Mapping[str, Value]


SCHEMA: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": True,
    "description": "Names and values; the step's output.",
}


def build(values: Mapping[str, Any]) -> SetAction:
    return SetAction(values=dict(values))


SPEC = ActionSpec("set", SetAction, SCHEMA, build)
