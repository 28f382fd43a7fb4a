"""hookd.callbacks.payload: what the inbox's writer makes of a raw body before recording it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from hookd.callbacks import payload
from hookd.callbacks.payload import Refused, check_json, examine, parse_json, violations_of
from hookd.callbacks.routing import compile_schema
from tests.test_daemon import Running, callback_url, daemon_on, http_flow, wait_until

__all__ = ["daemon_on"]  # a fixture

SCHEMA = compile_schema({"type": "object", "required": ["ref"],
                         "properties": {"ref": {"type": "string"}}})


def test_a_valid_body_is_kept_byte_for_byte() -> None:
    body = b'{ "ref" : "main",  "n": 1 }'
    assert examine(body, SCHEMA, "reject", False).bodies == [body]


@pytest.mark.parametrize("body, reason", [
    (b"", "empty body"),
    (b'{"ref": ', "invalid JSON"),
    (b"\xff\xfe", "invalid JSON"),
    (b"[" * 100_000, "invalid JSON"),
])
def test_a_body_that_is_not_json_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(Refused) as caught:
        examine(body, None, "off", False)
    assert caught.value.outcome == "bad_request" and reason in caught.value.reason
    assert "\n" not in caught.value.reason


def test_the_policy_decides_what_a_violation_does() -> None:
    body = b'{"ref": 1}'
    with pytest.raises(Refused) as caught:
        examine(body, SCHEMA, "reject", False)
    assert caught.value.outcome == "invalid_payload"
    assert caught.value.violations == ["ref: 1 is not of type 'string'"]
    # warn: recorded as received; the worker checks it (violations_of) and flags it.
    warned = examine(body, SCHEMA, "warn", False)
    assert warned.bodies == [body] and warned.problems == []
    assert violations_of(body, SCHEMA) == ["ref: 1 is not of type 'string'"]
    assert violations_of(b'{"ref": "main"}', SCHEMA) == []
    assert examine(body, SCHEMA, "off", False).problems == []


def test_a_batch_under_warn_is_checked_item_by_item_when_split() -> None:
    examined = examine(b'[{"ref": "a"}, {"ref": 3}]', SCHEMA, "warn", True)
    assert examined.items == [0, 1] and examined.problems == ["ref: 3 is not of type 'string'"]


# What parse_json accepts beyond strict JSON, and what it refuses: check_json must give
# the same verdict (simdjson says yes only to strict JSON; the rest goes to parse_json).
VERDICTS = [
    (b'{"a": [1, 2.5e3, true, null, "\\u00e9"]}', True),
    (b'\xef\xbb\xbf{"a": 1}', True),  # a UTF-8 byte order mark
    (b'{"a": NaN}', True),  # json's extension, kept
    (b'{"a": "\\ud800"}', True),  # a lone surrogate escape
    (b'{"a": 123456789012345678901234567890}', True),
    ('{"a": "é"}'.encode("utf-16"), True),
    (b"[" * 128 + b"]" * 128, True),  # MAX_JSON_DEPTH
    (b"[" * 129 + b"]" * 129, False),
    (b"[" * 1000 + b"]" * 1000, False),  # simdjson accepts it; the worker could not run it
    (b'{"a": "' + b"{[" * 300 + b'"}', True),  # brackets in a string do not nest
    (b'{"a": "\xff"}', False),  # not UTF-8
    (b'{"a": 1,}', False),
    (b'{"a": 1} x', False),
    (b'{"a": 01}', False),
    (b"{'a': 1}", False),
    (b"", False),
    (b" ", False),
]


@pytest.mark.parametrize("body, accepted", VERDICTS)
def test_the_quick_json_check_agrees_with_the_parser(body: bytes, accepted: bool) -> None:
    for check in (check_json, parse_json):
        if accepted:
            check(body)
        else:
            with pytest.raises(Refused):
                check(body)


def test_the_quick_check_works_without_simdjson(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payload, "simdjson", None)
    check_json(b'{"a": 1}')
    with pytest.raises(Refused, match="invalid JSON"):
        check_json(b'{"a": ')


def test_a_batch_is_split_into_items_parsed_exactly() -> None:
    big = 2**70  # beyond 64 bits: must survive the re-encoding
    examined = examine(b'[{"ref": "a", "n": %d}, {"ref": "b"}]' % big, SCHEMA, "reject", True)
    assert examined.items == [0, 1]
    assert [json.loads(b) for b in examined.bodies] == [{"ref": "a", "n": big}, {"ref": "b"}]
    with pytest.raises(Refused):
        examine(b'[{"ref": "a"}, {"ref": 3}]', SCHEMA, "reject", True)


def test_integers_beyond_64_bits_are_judged_exactly() -> None:
    schema = compile_schema({"type": "object", "properties": {"id": {"type": "integer"}}})
    assert examine(b'{"id": %d}' % 2**80, schema, "reject", False).problems == []
    assert parse_json(b'{"id": %d}' % 2**80, exact=True) == {"id": 2**80}


def test_a_body_too_deep_for_the_worker_is_refused_at_the_door(
    daemon_on: Callable[..., Running], tmp_path: Path
) -> None:
    """Depth 985-1024 was answered 202 and its run then failed with RecursionError (issue
    16 item 8): the listener refuses what the worker could not run, and runs the rest."""
    steps = "  - id: copy\n    set: {body: '{{ trigger.body }}'}\n"
    hookd = daemon_on(texts={"deep": http_flow("deep", steps)})
    hookd.notify.wait_for("READY")
    url = callback_url(tmp_path)
    headers = {"content-type": "application/json"}
    refused = httpx.post(url, content=b"[" * 1000 + b"]" * 1000, headers=headers, timeout=5)
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid JSON: nested deeper than 128 levels"}
    deepest = b'{"a":' * 127 + b"[1]" + b"}" * 127
    assert httpx.post(url, content=deepest, headers=headers, timeout=5).status_code == 202
    runs = wait_until(lambda: [r for r in hookd.get("/api/runs").json()["runs"]
                               if r["status"] not in ("queued", "running")], what="the run")
    assert [r["status"] for r in runs] == ["succeeded"], runs
