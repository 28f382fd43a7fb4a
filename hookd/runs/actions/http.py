"""The ``http`` action: one HTTP request to anywhere, the workhorse of notifications.

Input keys (rendered): ``method`` (default GET, or POST when there is a body), ``url``,
``headers``, ``query``, ``body`` (a mapping or list is sent as JSON, anything else as
text), ``expect`` (accepted statuses; default any 2xx). Output: ``status``, ``headers``
and ``json`` (when the response is JSON) or ``text``.

A status outside `expect` fails the step with the response as partial output; whether a
retry may help, and after how long, is `hookd.upstream.errors.classify`'s answer (the
same as for reconcile and ``call``): retryable for 408, 425, 429, GitHub's rate-limit
403s and 5xx other than 501/505, honouring ``Retry-After``; permanent otherwise, since
repeating a 404 or 401 never helps. A 2xx outside `expect` is permanent too. Connection
errors and timeouts are retryable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from hookd.runs import egress
from hookd.runs.actions import ActionContext, ActionError, as_text
from hookd.upstream import errors

TEXT_CAP = 1024 * 1024  # response characters kept as output

KIND = "http"  # the step key; hookd.config.actions.http declares its input and schema


async def execute(input: dict[str, Any], ctx: ActionContext) -> Any:
    body = input.get("body")
    method = str(input.get("method") or ("POST" if body is not None else "GET")).upper()
    url = as_text(input.get("url"))
    headers = {str(k): as_text(v) for k, v in (input.get("headers") or {}).items()}
    query = {str(k): as_text(v) for k, v in (input.get("query") or {}).items()}
    expect = tuple(int(s) for s in (input.get("expect") or ()))
    return await send(ctx, method, url, headers=headers, query=query, body=body, expect=expect)


async def send(
    ctx: ActionContext,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    body: Any = None,
    expect: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Send one request and turn the response into a step output (or an ActionError)."""
    hdrs = dict(headers or {})
    content: bytes | None = None
    if isinstance(body, Mapping | list | tuple):
        content = json.dumps(body, ensure_ascii=False, default=str).encode()
        _default(hdrs, "Content-Type", "application/json")
    elif body is not None:
        content = as_text(body).encode()
        _default(hdrs, "Content-Type", "text/plain; charset=utf-8")
    if not url.startswith(("http://", "https://")):
        raise ActionError(f"url must start with http:// or https://, not {url[:60]!r}",
                          retryable=False)
    # The egress policy (hookd.runs.egress); a url the pipeline did not render is literal.
    target = ctx.url if ctx.url is not None and ctx.url.url == url else egress.Target(url)
    refused = await egress.check(target, ctx.config)
    if refused is not None:
        raise ActionError(f"{method} {_where(url)}: refused: {refused}", retryable=False)
    timeout = ctx.timeout if ctx.timeout is not None else ctx.default_timeout
    try:
        response = await ctx.http.request(
            method, url, headers=hdrs, params=query or None, content=content, timeout=timeout
        )
    except httpx.TimeoutException:
        raise ActionError(f"{method} {_where(url)}: timed out after {timeout:g}s") from None
    except httpx.TransportError as exc:
        raise ActionError(f"{method} {_where(url)}: connection failed ({exc})") from None
    output = response_output(response)
    ok = response.status_code in expect if expect else 200 <= response.status_code < 300
    if not ok:
        status = response.status_code
        wanted = ", ".join(map(str, expect)) if expect else "2xx"
        message = output.get("text") or ""
        if isinstance(output.get("json"), Mapping):
            message = str(output["json"].get("message") or "")
        verdict = errors.classify(status, response.headers, now=time.time(),
                                  message=message[:300])
        raise ActionError(
            f"{method} {_where(url)}: status {status} (expected {wanted})",
            retryable=verdict.retryable,
            output=output,
            retry_after=verdict.after,
        )
    return output


def response_output(response: httpx.Response) -> dict[str, Any]:
    out: dict[str, Any] = {"status": response.status_code, "headers": dict(response.headers)}
    ctype = response.headers.get("content-type", "")
    if "json" in ctype:
        try:
            out["json"] = response.json()
            return out
        except ValueError:
            pass
    out["text"] = response.text[:TEXT_CAP]
    return out


def _default(headers: dict[str, str], name: str, value: str) -> None:
    if not any(k.lower() == name.lower() for k in headers):
        headers[name] = value


def _where(url: str) -> str:
    # Never the query string: tokens travel there.
    return url.split("?", 1)[0]

