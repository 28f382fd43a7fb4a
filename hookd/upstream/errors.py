"""What an HTTP answer means for the caller: success, give up, or try again (and when).

One pure decision, shared by everything that sends HTTP — reconcile's `Upstream`, the
``call`` step (through `Upstream`) and the ``http`` step — so that a 425 or a GitHub rate
limit means the same thing everywhere. It takes a status and headers (no httpx: the
senders adapt their responses) and answers a `Verdict`:

- ``ok``: 2xx.
- ``rate_limited``: 429 (RFC 6585), and 403 when GitHub says it is a rate limit —
  ``x-ratelimit-remaining: 0`` (primary limit), a ``Retry-After``, or a message naming a
  secondary rate limit (GitHub's REST docs, "Rate limits": the primary limit answers 403 or
  429 with ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset`` in UTC epoch seconds; the
  secondary one 403 or 429 with a message, and "wait at least one minute" when there is no
  ``Retry-After``). Always retryable.
- ``retryable``: 408 Request Timeout, 425 Too Early (RFC 8470: the server refused to risk a
  replay; the same request later is fine) and 5xx except 501 and 505, which say the server
  does not implement what was asked (RFC 9110 §15.6.2, §15.6.6): repeating will not help.
- ``permanent``: every other 4xx, and 3xx. hookd never follows redirects (credentials
  would follow them), so a redirect is not the answer asked for; it needs a config change
  (a ``base_url``, a URL). A caller that wants a 3xx says so (the ``http`` step's
  ``expect``) before asking this module.

``after`` is how long to wait before retrying, seconds, or None when the answer does not
say (the caller's backoff decides): ``Retry-After`` first (RFC 9110 §10.2.3), then GitHub's
``x-ratelimit-reset``, then the one minute GitHub asks for after a secondary limit.
`retry_after` parses the header and never raises: a value that is neither delta-seconds nor
an HTTP-date (``Retry-After: soon``) is unknown, not an error, so a step keeps its output.

The error types live here too, so a module can catch an upstream failure without
importing httpx.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Literal

Kind = Literal["ok", "permanent", "retryable", "rate_limited"]

SECONDARY_LIMIT_WAIT = 60.0  # GitHub: "wait for at least one minute before retrying"

_DELTA_SECONDS = re.compile(r"[0-9]+")  # RFC 9110: delay-seconds = 1*DIGIT (ASCII only)
_NOT_IMPLEMENTED = frozenset({501, 505})
_RETRYABLE_4XX = frozenset({408, 425})


class UpstreamError(Exception):
    """Base: a failed upstream call. `str()` is safe to show (no secrets, no query)."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body  # the upstream's (truncated) answer, for matching; never our request


class PermanentError(UpstreamError):
    """Needs a change of config or credentials; retrying will not help."""


class RetryableError(UpstreamError):
    """May succeed later; `retry_after` is the upstream's requested wait, seconds."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Verdict:
    """What a status + headers mean: `kind`, and `after` (seconds to wait) or None."""

    kind: Kind
    after: float | None = None

    @property
    def retryable(self) -> bool:
        return self.kind in ("retryable", "rate_limited")


def classify(status: int, headers: Mapping[str, str], *, now: float,
             message: str = "") -> Verdict:
    """The verdict for one answer; `message` is the upstream's error text, if any. Pure.

    >>> classify(204, {}, now=0)
    Verdict(kind='ok', after=None)
    >>> classify(503, {"Retry-After": "7"}, now=0)
    Verdict(kind='retryable', after=7.0)
    >>> classify(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "60"}, now=0)
    Verdict(kind='rate_limited', after=60.0)
    >>> classify(403, {}, now=0)
    Verdict(kind='permanent', after=None)
    """
    if 200 <= status < 300:
        return Verdict("ok")
    lower = {k.lower(): v for k, v in headers.items()}
    if status == 429 or (status == 403 and _github_rate_limit(lower, message)):
        after = _wait(lower, now)
        if after is None and "secondary rate limit" in message.lower():
            after = SECONDARY_LIMIT_WAIT
        return Verdict("rate_limited", after)
    if status in _RETRYABLE_4XX or (status >= 500 and status not in _NOT_IMPLEMENTED):
        return Verdict("retryable", _wait(lower, now))
    return Verdict("permanent")


def retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or None when absent or not understood.

    >>> retry_after("120", now=0), retry_after("soon", now=0), retry_after("-1", now=0)
    (120.0, None, None)
    >>> retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0)
    60.0
    >>> retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=40.0)  # in the past: now
    0.0
    """
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime and "-0000" carry no zone: HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _github_rate_limit(headers: Mapping[str, str], message: str) -> bool:
    return (headers.get("x-ratelimit-remaining") == "0" or "retry-after" in headers
            or "rate limit" in message.lower())


def _wait(headers: Mapping[str, str], now: float) -> float | None:
    after = retry_after(headers.get("retry-after"), now=now)
    if after is not None:
        return after
    reset = headers.get("x-ratelimit-reset")
    if headers.get("x-ratelimit-remaining") == "0" and reset and _DELTA_SECONDS.fullmatch(reset):
        return max(0.0, float(reset) - now)
    return None
