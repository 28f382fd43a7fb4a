"""The ``log`` action: one structured line in hookd's log (journal), for breadcrumbs and
for the cheapest possible pipeline (the benchmark's). Output: the message and fields."""

from __future__ import annotations

import logging
from typing import Any

from hookd.runs.actions import ActionContext

# Keys a LogRecord already has; a field with such a name would make logging raise.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}

KIND = "log"  # the step key; hookd.config.actions.log declares its input and schema


async def execute(input: dict[str, Any], ctx: ActionContext) -> Any:
    message = input.get("message")
    message = "" if message is None else str(message)
    fields = dict(input.get("fields") or {})
    level = _LEVELS.get(str(input.get("level") or "info").lower(), logging.INFO)
    if ctx.logger.isEnabledFor(level):
        extra = {"flow": ctx.flow, "run": ctx.run_id, "delivery": ctx.delivery_id}
        extra.update({(f"field_{k}" if k in _RESERVED else str(k)): v for k, v in fields.items()})
        ctx.logger.log(level, message, extra=extra)
    return {"message": message, "fields": fields}
