"""hookd.upstream.errors: one verdict per HTTP answer, the same for reconcile, call and http."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from hookd.runs.actions import ActionContext, ActionError, executor
from hookd.upstream.client import RetryableError, classify
from hookd.upstream.errors import SECONDARY_LIMIT_WAIT, Verdict, retry_after
from hookd.upstream.errors import classify as verdict_of

NOW = 1_000_000.0

# (status, headers, upstream message, kind, after): RFC 9110 / 6585 / 8470 and GitHub's
# REST docs ("Rate limits for the REST API"), see the module docstring.
TABLE: list[tuple[int, dict[str, str], str, str, float | None]] = [
    (200, {}, "", "ok", None),
    (204, {}, "", "ok", None),
    (301, {"Location": "https://x"}, "", "permanent", None),
    (302, {"Retry-After": "5"}, "", "permanent", None),
    (304, {}, "", "permanent", None),
    (400, {}, "", "permanent", None),
    (401, {}, "Bad credentials", "permanent", None),
    (403, {}, "Resource not accessible by integration", "permanent", None),
    (403, {"x-ratelimit-remaining": "1"}, "Forbidden", "permanent", None),
    (404, {}, "", "permanent", None),
    (408, {}, "", "retryable", None),
    (409, {}, "", "permanent", None),
    (422, {}, "", "permanent", None),
    (425, {}, "", "retryable", None),
    (425, {"Retry-After": "2"}, "", "retryable", 2.0),
    (429, {}, "", "rate_limited", None),
    (429, {"Retry-After": "30"}, "", "rate_limited", 30.0),
    (429, {"retry-after": "soon"}, "", "rate_limited", None),
    (429, {"Retry-After": "Mon, 12 Jan 1970 14:20:10 GMT"}, "", "rate_limited", 2010.0),
    # GitHub, primary limit: remaining 0 and the reset time in UTC epoch seconds.
    (403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 90)},
     "API rate limit exceeded for user ID 1.", "rate_limited", 90.0),
    (429, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) - 5)},
     "", "rate_limited", 0.0),
    # GitHub, secondary limit: Retry-After when given, else at least a minute.
    (403, {"Retry-After": "45"}, "You have exceeded a secondary rate limit.", "rate_limited", 45.0),
    (403, {}, "You have exceeded a secondary rate limit.", "rate_limited",
     SECONDARY_LIMIT_WAIT),
    (429, {}, "You have exceeded a secondary rate limit.", "rate_limited",
     SECONDARY_LIMIT_WAIT),
    (500, {}, "", "retryable", None),
    (501, {}, "", "permanent", None),
    (502, {}, "", "retryable", None),
    (503, {"Retry-After": "120"}, "", "retryable", 120.0),
    (503, {"Retry-After": "-1"}, "", "retryable", None),
    (504, {}, "", "retryable", None),
    (505, {}, "", "permanent", None),
]


@pytest.mark.parametrize(("status", "headers", "message", "kind", "after"), TABLE)
def test_verdict(status: int, headers: dict[str, str], message: str, kind: str,
                 after: float | None) -> None:
    assert verdict_of(status, headers, now=NOW, message=message) == Verdict(kind, after)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None), ("", None), ("0", 0.0), ("120", 120.0), (" 7 ", 7.0),
        ("soon", None), ("-1", None), ("1.5", None), ("1e3", None), ("٣", None),
        ("Mon, 12 Jan 1970 14:20:10 GMT", 2010.0),  # IMF-fixdate
        ("Monday, 12-Jan-70 14:20:10 GMT", 2010.0),  # obsolete RFC 850
        ("Mon Jan 12 14:20:10 1970", 2010.0),  # obsolete asctime, no zone: GMT
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),  # past: retry now
        ("Thu, 32 Jan 1970 00:00:00 GMT", None), ("Mon, 99 Foo 2024", None),
    ],
)
def test_retry_after_never_raises(value: str | None, seconds: float | None) -> None:
    assert retry_after(value, now=NOW) == seconds


def _answer(status: int, headers: dict[str, str], message: str) -> httpx.Response:
    body: Any = {"message": message} if message else None
    return httpx.Response(status, json=body, headers=headers,
                          request=httpx.Request("GET", "https://api.github.com/x"))


def _http_step(status: int, headers: dict[str, str], message: str) -> ActionError | None:
    async def go() -> ActionError | None:
        transport = httpx.MockTransport(lambda r: _answer(status, headers, message))
        async with httpx.AsyncClient(transport=transport) as client:
            try:
                await executor("http")({"url": "https://api.github.com/x"},
                                       ActionContext(http=client))
            except ActionError as exc:
                return exc
            return None
    return asyncio.run(go())


@pytest.mark.parametrize(("status", "headers", "message", "kind", "after"),
                         [row for row in TABLE if "Reset" not in str(row[1])
                          and "reset" not in row[1] and "GMT" not in str(row[1])])
def test_reconcile_and_the_http_step_agree(status: int, headers: dict[str, str], message: str,
                                           kind: str, after: float | None) -> None:
    upstream = classify(_answer(status, headers, message), now=NOW)
    step = _http_step(status, headers, message)
    if kind == "ok":
        assert upstream is None and step is None
        return
    assert upstream is not None and step is not None
    assert isinstance(upstream, RetryableError) is step.retryable is (kind != "permanent")
    assert step.retry_after == (upstream.retry_after if step.retryable else None) == after
    assert step.output["status"] == status  # the target's answer is kept as output


# The modules that send HTTP requests; everything else names httpx types for annotations
# only (under TYPE_CHECKING) and catches hookd.upstream.errors' exceptions.
SENDERS = {
    "hookd/upstream/client.py",  # every upstream request (reconcile, call steps)
    "hookd/runs/worker.py",  # the http/notify steps' shared client
    "hookd/runs/actions/http.py",  # http and notify steps
    "hookd/cli/commands/send.py",  # hookd send
    "hookd/cli/commands/status.py",  # hookd status (asks the admin listener)
}


def test_httpx_is_imported_only_where_requests_are_sent() -> None:
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    importers = set()
    for path in sorted((root / "hookd").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "httpx" or n.startswith("httpx.") for n in names) and id(node) not in guarded:
                importers.add(str(path.relative_to(root)))
    assert importers <= SENDERS, f"httpx imported outside the senders: {importers - SENDERS}"
