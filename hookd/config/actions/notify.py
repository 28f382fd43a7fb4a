"""The ``notify`` step: a chat or push message (executor: `hookd.runs.actions.notify`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hookd.config.actions.spec import ActionSpec

if TYPE_CHECKING:
    from hookd.config.model import Value


@dataclass(frozen=True)
class NotifyAction:
    kind: Literal["ntfy", "slack", "teams", "discord", "webhook"]
    url: Value
    message: Value
    title: Value = None


SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "url", "message"],
    "properties": {
        "kind": {"enum": ["ntfy", "slack", "teams", "discord", "webhook"]},
        "url": {"type": "string", "minLength": 1},
        "message": {"type": "string"},
        "title": {"type": "string"},
    },
}


def build(n: Mapping[str, Any]) -> NotifyAction:
    return NotifyAction(kind=n["kind"], url=n["url"], message=n["message"], title=n.get("title"))


SPEC = ActionSpec("notify", NotifyAction, SCHEMA, build)
