"""hookd.payload: what the inbox's writer makes of a raw body before recording it."""

from __future__ import annotations

import json

import pytest

from hookd.payload import Refused, examine, parse_json
from hookd.routing import compile_schema

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
    warned = examine(body, SCHEMA, "warn", False)
    assert warned.bodies == [body] and warned.problems == ["ref: 1 is not of type 'string'"]
    assert examine(body, SCHEMA, "off", False).problems == []


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
