"""The ``notify`` action: sugar over ``http`` for push-notification targets, so a flow
says *what* to tell rather than each service's payload shape.

``kind``: ``ntfy`` (POST the message as text to the topic URL, ``Title`` header),
``slack`` and ``teams`` (incoming webhook, JSON ``{"text": …}``), ``discord`` (JSON
``{"content": …}``), ``webhook`` (JSON ``{"title": …, "message": …}``). Output as ``http``.
"""

from __future__ import annotations

import base64
from typing import Any

from hookd.runs.actions import ActionContext, ActionError, as_text
from hookd.runs.actions.http import send


def request_for(kind: str, message: str, title: str | None) -> tuple[dict[str, str], Any]:
    """Headers and body for one notification (pure, table-tested)."""
    if kind == "ntfy":
        return ({"Title": _header_text(title)} if title else {}), message
    text = f"{title}\n{message}" if title else message
    if kind in ("slack", "teams"):
        return {}, {"text": f"*{title}*\n{message}" if title and kind == "slack" else text}
    if kind == "discord":
        return {}, {"content": text}
    if kind == "webhook":
        return {}, {"title": title, "message": message}
    raise ActionError(f"unknown notify kind '{kind}' (ntfy, slack, teams, discord, webhook)",
                      retryable=False)


def _header_text(text: str) -> str:
    # Header values must be ASCII; ntfy decodes RFC 2047 encoded words.
    if text.isascii():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="

KIND = "notify"  # the step key; hookd.config.actions.notify declares its input and schema


async def execute(input: dict[str, Any], ctx: ActionContext) -> Any:
    title = input.get("title")
    headers, body = request_for(
        str(input.get("kind")), as_text(input.get("message")),
        None if title is None else as_text(title),
    )
    return await send(ctx, "POST", as_text(input.get("url")), headers=headers, body=body)
