"""Tolerant JSON reading: each repair is accepted with a warning that says where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookd.connectors import lenientjson

F = Path("spec.json")


def messages(parsed: lenientjson.Parsed) -> list[str]:
    return [d.format() for d in parsed.diagnostics]


@pytest.mark.parametrize(
    ("data", "value", "expected"),
    [
        (b'{"a": 1}', {"a": 1}, []),
        (b'\xef\xbb\xbf{"a": 1}', {"a": 1},
         ["spec.json:1:1: warning: UTF-8 byte-order mark at the start of the file; "
          "hint: save the file as UTF-8 without BOM"]),
        ('{"name": "Brønnøysund"}'.encode("latin-1"), {"name": "Brønnøysund"},
         ["spec.json:1:13: warning: not UTF-8 (byte 0xf8); such bytes are read as Latin-1; "
          "hint: re-save the file as UTF-8"]),
        (b'{\n  "a": [1, 2,],\n  "b": {"c": 3,},\n}', {"a": [1, 2], "b": {"c": 3}},
         ["spec.json:2:13: warning: trailing comma (3 in this file); "
          "hint: remove it, strict JSON tools reject it"]),
        ('{"a":\u20031}'.encode(), {"a": 1},
         ["spec.json:1:6: warning: whitespace JSON does not allow (U+2003); "
          "hint: replace it with a plain space"]),
        ('{"a":\u00a01,\n"b": 2}'.encode(), {"a": 1, "b": 2},
         ["spec.json:1:6: warning: whitespace JSON does not allow (U+00A0); "
          "hint: replace it with a plain space"]),
        (b'{"operationId": "a", "operationId": "b"}', {"operationId": "b"},
         ["spec.json: warning: duplicate JSON keys (operationId): the last one wins"]),
    ],
    ids=["clean", "bom", "latin-1", "trailing-commas", "em-space", "nbsp", "duplicate-keys"],
)
def test_repairs_are_tolerated_with_a_warning(data: bytes, value: object, expected: list[str]) -> None:
    parsed = lenientjson.loads(data, F)
    assert parsed.value == value
    assert messages(parsed) == expected


def test_one_stray_byte_in_a_utf8_file_keeps_the_rest_utf8() -> None:
    # Yelp's spec in the corpus: UTF-8 with a single 0xAD byte.
    parsed = lenientjson.loads('{"a": "café", "b": "x\xady"}'.encode().replace(b"\xc2\xad", b"\xad"), F)
    assert parsed.value == {"a": "café", "b": "x\xady"}
    assert "byte 0xad" in messages(parsed)[0]


def test_strings_are_never_repaired() -> None:
    text = '{"a": "x,]\u2003y", "b": [1,]}'
    parsed = lenientjson.loads(text.encode(), F)
    assert parsed.value == {"a": "x,]\u2003y", "b": [1]}
    assert len(parsed.diagnostics) == 1


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{\n  "a": 1\n  "b": 2\n}', "spec.json:3:3: error: invalid JSON: Expecting ',' delimiter"),
        (b'{"a": [1, 2}', "spec.json:1:12: error: invalid JSON: Expecting ',' delimiter"),
        (b'{"a": 1}}', "spec.json:1:9: error: invalid JSON: Extra data"),
        (b"", "spec.json:1:1: error: invalid JSON: Expecting value"),
    ],
)
def test_unparseable_is_an_error_with_line_and_column(data: bytes, expected: str) -> None:
    parsed = lenientjson.loads(data, F)
    assert parsed.value is None
    assert messages(parsed) == [expected]


def test_unreadable_file_is_an_error_not_an_exception(tmp_path: Path) -> None:
    parsed = lenientjson.load(tmp_path / "missing.json")
    assert parsed.value is None
    assert parsed.diagnostics[0].is_error
    assert "cannot read" in parsed.diagnostics[0].message


TEXT = """{
  "paths": {
    "/hooks": {
      "post": {"operationId": "x", "parameters": [{"name": "a"}, {"name": "b",}]}
    }
  },
  "definitions": {}
}"""


@pytest.mark.parametrize(
    ("path", "where"),
    [
        (("paths",), (2, 3)),
        (("paths", "/hooks", "post"), (4, 7)),
        (("paths", "/hooks", "post", "parameters", 1), (4, 66)),
        (("paths", "/hooks", "post", "parameters", 1, "name"), (4, 67)),
        (("definitions",), (7, 3)),
        (("paths", "/nope", "post"), (2, 3)),  # the deepest part found
        (("paths", "/hooks", "post", "parameters", 9), (4, 36)),
    ],
)
def test_locate_finds_keys_after_repairs(path: tuple[str | int, ...], where: tuple[int, int]) -> None:
    parsed = lenientjson.loads(TEXT.encode(), F)
    assert parsed.value is not None
    assert parsed.locate(path) == where


# --------------------------------------------------------------------------- properties

text = st.text(alphabet=st.sampled_from('ab,]}"\\ \u2003\u00a0\ufeff'), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
ODD_SPACES = ["\u2003", "\u00a0", "\u3000", "\ufeff", " "]


def dirty_dump(value: object, data: st.DataObject) -> str:
    """`value` as JSON with trailing commas and odd whitespace sprinkled between tokens."""
    def space() -> str:
        return data.draw(st.sampled_from(ODD_SPACES)) if data.draw(st.booleans()) else ""

    if isinstance(value, dict):
        items = [f"{space()}{json.dumps(k, ensure_ascii=False)}{space()}:{space()}{dirty_dump(v, data)}"
                 for k, v in value.items()]
        comma = "," if items and data.draw(st.booleans()) else ""
        return "{" + ",".join(items) + comma + space() + "}"
    if isinstance(value, list):
        items = [f"{space()}{dirty_dump(v, data)}" for v in value]
        comma = "," if items and data.draw(st.booleans()) else ""
        return "[" + ",".join(items) + comma + space() + "]"
    return json.dumps(value, ensure_ascii=False)  # odd spaces inside strings stay as they are


@settings(max_examples=150, deadline=None)
@given(value=json_values, data=st.data())
def test_dirty_json_reads_back_the_same_value(value: object, data: st.DataObject) -> None:
    text = dirty_dump(value, data)
    parsed = lenientjson.loads(text.encode(), F)
    assert parsed.value == value or (value is None and parsed.value is None)
    assert not any(d.is_error for d in parsed.diagnostics)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64))
def test_any_bytes_give_a_value_or_an_error_never_an_exception(data: bytes) -> None:
    parsed = lenientjson.loads(data, F)
    if parsed.value is None:
        assert all(d.file == F for d in parsed.diagnostics)
    parsed.locate(("a", 0, "b"))
