"""The ``http`` step: one HTTP request to anywhere (executor: `hookd.runs.actions.http`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hookd.config.actions.spec import ActionSpec

if TYPE_CHECKING:
    from hookd.config.model import Value


@dataclass(frozen=True)
class HttpAction:
    method: str
    url: Value
    headers: Mapping[str, Value] = field(default_factory=dict)
    query: Mapping[str, Value] = field(default_factory=dict)
    body: Value = None  # dict/list → JSON; str → text
    expect: tuple[int, ...] = ()  # accepted statuses; empty = any 2xx


SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url"],
    "properties": {
        "method": {"type": "string", "pattern": "^[A-Za-z]+$",
                   "description": "Default GET, or POST when a body is given."},
        "url": {"type": "string", "minLength": 1},
        "headers": {"type": "object", "additionalProperties": True},
        "query": {"type": "object", "additionalProperties": True},
        "body": {"description": "A mapping or list is sent as JSON, a string as text."},
        "expect": {
            "anyOf": [{"$ref": "#/$defs/status"},
                      {"type": "array", "items": {"$ref": "#/$defs/status"}, "minItems": 1}],
            "description": "Accepted status code(s) (default any 2xx).",
        },
    },
}


def build(h: Mapping[str, Any]) -> HttpAction:
    expect = h.get("expect", ())
    return HttpAction(
        method=str(h.get("method") or ("POST" if h.get("body") is not None else "GET")).upper(),
        url=h["url"],
        headers=dict(h.get("headers") or {}),
        query=dict(h.get("query") or {}),
        body=h.get("body"),
        expect=(expect,) if isinstance(expect, int) else tuple(expect),
    )


SPEC = ActionSpec("http", HttpAction, SCHEMA, build)
