"""The ``call`` action: invoke any operation of a loaded connector (for example GitHub's
"create an issue comment") with a named connection, through `hookd.upstream.client` — the one
module that talks to upstreams, so authentication, base-URL overrides and error
classification are the same as for subscriptions.

Input keys (rendered): ``connector``, ``operation`` (operationId), ``connection`` (name;
default: the only connection for that connector), ``parameters`` (path/query/header
parameters by name), ``body`` (JSON). Output as ``http``: ``status``, ``headers``,
``json`` or ``text``. Upstream's permanent errors (4xx) fail without retry; retryable
ones (5xx, 429, timeouts) are left to the step's ``retry``.
"""

from __future__ import annotations

from typing import Any

from hookd.runs.actions import ActionContext, ActionError
from hookd.runs.actions.http import response_output
from hookd.upstream import errors as up

KIND = "call"  # the step key; hookd.config.actions.call declares its input and schema


async def execute(input: dict[str, Any], ctx: ActionContext) -> Any:
    config = ctx.config
    if config is None or ctx.upstream is None:
        raise ActionError("call: no connectors are available to this worker", retryable=False)
    name = str(input.get("connector"))
    connector = config.connectors.get(name)
    if connector is None:
        raise ActionError(f"call: unknown connector '{name}'", retryable=False)
    operation = str(input.get("operation"))
    if operation not in connector.operations:
        raise ActionError(f"call: connector '{name}' has no operation '{operation}'",
                          retryable=False)
    conn_name = input.get("connection")
    if conn_name is None:
        candidates = [c for c in config.connections.values() if c.connector == name]
        connection = candidates[0] if len(candidates) == 1 else None
    else:
        connection = config.connections.get(str(conn_name))
        if connection is None:
            raise ActionError(f"call: unknown connection '{conn_name}'", retryable=False)
    try:
        response = await ctx.upstream.call(
            connector, operation, connection, dict(input.get("parameters") or {}),
            input.get("body"), retry=False,
        )
    except up.PermanentError as exc:
        raise ActionError(f"call {name}.{operation}: {exc}", retryable=False) from None
    except up.RetryableError as exc:
        raise ActionError(f"call {name}.{operation}: {exc}",
                          retry_after=exc.retry_after) from None
    except up.UpstreamError as exc:
        raise ActionError(f"call {name}.{operation}: {exc}") from None
    return response_output(response)
