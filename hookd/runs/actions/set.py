"""The ``set`` action: compute named values once so later steps read
``steps.<id>.output.<name>`` instead of repeating an expression. Output: the values."""

from __future__ import annotations

from typing import Any

from hookd.runs.actions import ActionContext

KIND = "set"  # the step key; hookd.config.actions.set declares its input and schema


async def execute(input: dict[str, Any], ctx: ActionContext) -> Any:
    return dict(input.get("values") or {})
