"""What a notification body means: parse it, check it against the trigger's schema, split
a batch into its items. Pure: bytes and a compiled schema in, bodies or a refusal out.

Why this is not in the callback listener: the listener's event loop answers every
request in one thread, and parsing a push plus checking it against its schema was a
large share of its work per request (docs/adr/0007-payload-checks.md). The inbox writer (`hookd.store.sqlite.engine`) runs this for
every record job before writing it, inside the round trip that makes the delivery
durable anyway — so a malformed body or a payload the ``reject`` policy refuses still
gets its 400 and nothing is recorded.

What is checked before the answer, and what after: the ``reject`` policy and batch
triggers need the parsed body at once (to refuse it, to split it). A single body under
``warn`` or ``off`` only has to be JSON: simdjson validates it several times faster than
parsing it into Python objects and checking the schema, and that writer time is taken
from the event loop (one GIL). The ``warn`` schema check then runs
in the worker, which parses the body for the flow anyway (`violations_of`), and flags
the delivery there (`hookd.runs.worker`).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

import orjson

# SchemaCheck is part of this module's signatures (`examine`), so callers may import it here.
from hookd.callbacks.routing import SchemaCheck as SchemaCheck
from hookd.callbacks.routing import check_violations

simdjson: Any
try:  # a fast validity check; without it (no wheel for the platform) bodies are parsed
    import simdjson
except ImportError:  # pragma: no cover - pysimdjson is a dependency
    simdjson = None


# The deepest nesting of arrays and objects a body may have. The worker walks payloads
# recursively (json.loads, templates, redaction: two Python frames a level), and Python
# stops at ~1000 frames: a body of depth 985-1024 was answered 202, then its run failed
# with RecursionError. 128 leaves that margin several times over; real webhook payloads
# nest 5-20 levels. The listener refuses deeper bodies (400); the worker parses under it.
MAX_JSON_DEPTH = 128

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")


def too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Does JSON `body` nest arrays/objects deeper than `limit`?

    Almost every body has fewer brackets than `limit` in all, which settles it with two
    byte counts (~1 µs for a 7 KB push). Otherwise strings are blanked, everything but
    the brackets dropped, and innermost pairs removed a round at a time: a body of depth
    d is empty after d rounds.

    >>> too_deep(b'[' * 128 + b']' * 128), too_deep(b'[' * 129 + b']' * 129)
    (False, True)
    >>> too_deep(b'{"a": "' + b'[' * 500 + b'"}')
    False
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b'""', body).translate(_ONE_KIND, _NOT_BRACKET)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def check_depth(body: bytes) -> None:
    """Raise `Refused` (400) for a body nested deeper than `MAX_JSON_DEPTH`."""
    if too_deep(body):
        raise Refused("bad_request",
                      f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels")


class Refused(Exception):
    """A body the inbox will not record; the listener answers 400 (`hookd.ingest.app`)."""

    def __init__(self, outcome: str, reason: str, violations: list[str] | None = None) -> None:
        super().__init__(reason)
        self.outcome = outcome  # "bad_request" (not JSON) | "invalid_payload" (schema, reject)
        self.reason = reason
        self.violations = violations or []


@dataclass(frozen=True)
class Examined:
    """A body accepted for recording: one body per delivery (a batch: one per item)."""

    bodies: list[bytes]
    items: list[int | None]  # the item's index in a batch, None for a whole body
    problems: list[str]  # a batch's schema violations under ``warn`` (recorded, flagged)


def examine(body: bytes, check: SchemaCheck | None, policy: str, batch: bool) -> Examined:
    """Check `body` for recording under `policy` (``reject``/``warn``/``off``); split a batch.

    Raises `Refused` for a body that is not JSON, or that violates the schema under
    ``reject``. A single body is kept byte for byte; batch items are re-encoded. A single
    body under ``warn`` or ``off`` is only checked to be JSON: its ``warn`` schema check is
    the worker's (`violations_of`, module docstring).
    """
    if not batch:
        check_json(body)  # the depth too
        if policy == "reject" and check is not None:
            _refuse_if(violations_of(body, check))
        return Examined([body], [None], [])
    # Batch items are re-encoded one by one: parse those exactly (see parse_json).
    payload = parse_json(body, exact=True)
    items: list[Any] = payload if isinstance(payload, list) else [payload]
    problems: list[str] = []
    if check is not None and policy != "off":
        problems = [p for item in items for p in check_violations(check, item)][:3]
        if policy == "reject":
            _refuse_if(problems)
    if len(items) == 1 and items[0] is payload:
        return Examined([body], [None], problems)  # the raw body as received
    bodies = [json.dumps(item, separators=(",", ":")).encode() for item in items]
    return Examined(bodies, list(range(len(items))), problems)


def _refuse_if(problems: list[str]) -> None:
    if problems:
        raise Refused("invalid_payload", "payload does not match the trigger's schema", problems)


def violations_of(body: bytes, check: SchemaCheck) -> list[str]:
    """The first schema violations of a recorded single body (empty: none, or not JSON)."""
    try:
        value = parse_json(body)
    except Refused:
        return []
    problems = check_violations(check, value)
    if problems:  # rare: judge by the exact parse (an integer beyond 64 bits is no float)
        problems = check_violations(check, parse_json(body, exact=True))
    return problems[:3]


_local = threading.local()


def check_json(body: bytes) -> None:
    """Raise `Refused` unless `body` is JSON that `parse_json` accepts.

    simdjson accepts strict RFC 8259 JSON in valid UTF-8, which `parse_json` accepts too;
    whatever it refuses (NaN, a UTF-16 body, an integer beyond 64 bits, lone surrogate
    escapes, nesting deeper than 1024) goes to `parse_json` for the verdict and the message.
    Bodies nested deeper than `MAX_JSON_DEPTH` are refused either way.
    """
    check_depth(body)
    if simdjson is not None and body:
        parser = getattr(_local, "parser", None)
        if parser is None:  # one per thread: a simdjson parser reuses its buffers
            parser = _local.parser = simdjson.Parser()
        try:
            document = parser.parse(body)
        except Exception:  # ValueError, or RuntimeError for a parser still in use
            pass
        else:
            del document  # releases the parser for its next body
            return
    parse_json(body)


def parse_json(body: bytes, *, exact: bool = False) -> Any:
    """The parsed body. orjson parses a 7 KB payload ~3x faster than `json`; anything it
    refuses goes through `json` as well, so what is accepted (NaN, UTF-16 bodies, lone
    surrogate escapes) and every error message stay the standard library's.

    One difference remains: orjson turns an integer beyond 64 bits into a float. Callers
    that re-encode the value, or whose verdict depends on it, ask for `exact` (`json`).
    """
    if not body:
        raise Refused("bad_request", "empty body; expected JSON")
    check_depth(body)
    if not exact:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body)
    except RecursionError:
        raise Refused("bad_request", "invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, huge integers
        raise Refused("bad_request", f"invalid JSON: {_one_line(str(exc))}") from None


def _one_line(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
