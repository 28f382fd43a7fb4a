"""Read JSON the way real connector files are written, not the way RFC 8259 says.

Power Platform connector files are hand-edited: some start with a UTF-8 byte-order mark,
some are Latin-1, some carry trailing commas or a stray em-space between tokens, some
repeat a key. A strict parser rejects all of them; silently accepting them hides problems
the author should fix. So each repair is *tolerated with a warning* that says where, and a
file that still does not parse is an error with ``line:col`` — never an exception.

Repairs keep character offsets unchanged (a bad character becomes one space), so a
position found in the repaired text is a position in the file as the editor shows it.

`locate` finds the ``line:col`` of a key path after the fact, using the C scanner of the
standard library to skip values: positions cost nothing until a diagnostic needs one.

>>> doc = loads(b'{"a": {"b": [1, 2,],},}', Path("x.json"))
>>> doc.value
{'a': {'b': [1, 2]}}
>>> [d.format() for d in doc.diagnostics]
['x.json:1:18: warning: trailing comma (3 in this file); hint: remove it, strict JSON tools reject it']
>>> doc.locate(("a", "b", 1))
(1, 17)
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hookd.diagnostics import Diagnostic

KeyPath = Sequence[str | int]

# Outside strings: a trailing comma, or whitespace JSON does not allow between tokens.
# `_repair` splits the text at its strings first, so that nothing inside a string is touched.
_STRING = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")')
_REPAIR = re.compile(
    r"(,)(?=[\s\u200b\ufeff]*[}\]])"
    r"|([\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff\x0b\x0c\x85])"
)
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


@dataclass
class Parsed:
    """A parsed file: the value (None when unparseable), the text and what was wrong."""

    file: Path
    value: Any
    text: str
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def locate(self, path: KeyPath) -> tuple[int, int]:
        return locate(self.text, path)


def load(path: Path) -> Parsed:
    """Read and parse `path`; an unreadable file is an error diagnostic, not an exception."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Parsed(path, None, "", [Diagnostic(path, 0, 0, "error", f"cannot read: {exc.strerror}")])
    return loads(data, path)


def loads(data: bytes | str, file: Path) -> Parsed:
    """Parse `data` leniently; see the module docstring for what is tolerated."""
    diags: list[Diagnostic] = []
    text = _decode(data, file, diags) if isinstance(data, bytes) else data
    if text.startswith("\ufeff"):
        if isinstance(data, bytes):  # a str BOM is rare enough not to warn twice
            diags.append(
                Diagnostic(file, 1, 1, "warning", "UTF-8 byte-order mark at the start of the file",
                           hint="save the file as UTF-8 without BOM")
            )
        text = " " + text[1:]
    duplicates: list[str] = []
    try:
        value = _parse(text, duplicates)
    except json.JSONDecodeError:
        text, repairs = _repair(text, file)
        diags.extend(repairs)
        try:
            value = _parse(text, duplicates)
        except json.JSONDecodeError as exc:
            diags.append(
                Diagnostic(file, exc.lineno, exc.colno, "error", f"invalid JSON: {exc.msg}")
            )
            return Parsed(file, None, text, diags)
    if duplicates:
        names = ", ".join(sorted(set(duplicates)))
        diags.append(
            Diagnostic(file, 0, 0, "warning", f"duplicate JSON keys ({names}): the last one wins")
        )
    return Parsed(file, value, text, diags)


def _decode(data: bytes, file: Path, diags: list[Diagnostic]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        first = exc.start
    # Each byte that is not valid UTF-8 is read as Latin-1, so a Latin-1 file and a UTF-8
    # file with one stray byte both come out right.
    text = data.decode("utf-8", errors=_LATIN1_FALLBACK)
    line = data.count(b"\n", 0, first) + 1
    col = first - (data.rfind(b"\n", 0, first) + 1) + 1
    diags.append(
        Diagnostic(file, line, col, "warning",
                   f"not UTF-8 (byte 0x{data[first]:02x}); such bytes are read as Latin-1",
                   hint="re-save the file as UTF-8")
    )
    return text


def _latin1_fallback(exc: UnicodeError) -> tuple[str, int]:
    assert isinstance(exc, UnicodeDecodeError)
    return exc.object[exc.start : exc.end].decode("latin-1"), exc.end


_LATIN1_FALLBACK = "hookd-latin1-fallback"
codecs.register_error(_LATIN1_FALLBACK, _latin1_fallback)


def _parse(text: str, duplicates: list[str]) -> Any:
    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            seen: set[str] = set()
            duplicates.extend(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        return result

    return json.loads(text, object_pairs_hook=pairs_hook)


def _repair(text: str, file: Path) -> tuple[str, list[Diagnostic]]:
    """Blank out trailing commas and odd whitespace outside strings, keeping offsets."""
    found: dict[str, list[int]] = {"comma": [], "space": []}
    if _REPAIR.search(text) is not None:  # else nothing to repair, even inside strings
        # Even items are outside strings, odd ones are strings: one C call splits them,
        # instead of a Python call per string (some files hold 10^4 strings).
        parts = _STRING.split(text)
        offset = 0
        for index, part in enumerate(parts):
            if index % 2 == 0 and _REPAIR.search(part) is not None:
                parts[index] = _REPAIR.sub(_fixer(found, offset), part)
            offset += len(part)
        text_out = "".join(parts)
    else:
        text_out = text
    diags = []
    for kind, what, hint in (
        ("comma", "trailing comma", "remove it, strict JSON tools reject it"),
        ("space", "whitespace JSON does not allow", "replace it with a plain space"),
    ):
        offsets = found[kind]
        if not offsets:
            continue
        line, col = position(text, offsets[0])
        detail = f" (U+{ord(text[offsets[0]]):04X})" if kind == "space" else ""
        many = f" ({len(offsets)} in this file)" if len(offsets) > 1 else ""
        diags.append(Diagnostic(file, line, col, "warning", f"{what}{detail}{many}", hint=hint))
    return text_out, diags


def _fixer(found: dict[str, list[int]], base: int) -> Callable[[re.Match[str]], str]:
    """The replacement function of `_repair` for a part that starts at offset `base`."""

    def fix(m: re.Match[str]) -> str:
        found["comma" if m.group(1) else "space"].append(base + m.start())
        return " "

    return fix


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - text.rfind("\n", 0, offset)


def locate(text: str, path: KeyPath) -> tuple[int, int]:
    """``(line, col)`` of the key (or array item) at `path`, or of the deepest part found.

    Works on text that parses (the repaired text of a `Parsed`); ``(0, 0)`` when even the
    top level cannot be read.
    """
    n = len(text)
    i = _WS.match(text, 0).end()  # type: ignore[union-attr]
    if i >= n:
        return 0, 0
    best = i
    try:
        for part in path:
            if i >= n:
                break
            if text[i] == "{":
                i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
                hit = False
                while i < n and text[i] == '"':
                    key_at = i
                    key, i = _DECODER.raw_decode(text, i)
                    i = _WS.match(text, i).end() + 1  # type: ignore[union-attr]  # ':'
                    i = _WS.match(text, i).end()  # type: ignore[union-attr]
                    if key == part:
                        best, hit = key_at, True
                        break
                    i = _skip_value(text, i)
                if not hit:
                    break
            elif text[i] == "[" and isinstance(part, int):
                i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
                for _ in range(part):
                    if i >= n or text[i] == "]":
                        break
                    i = _skip_value(text, i)
                if i >= n or text[i] == "]":
                    break
                best = i
            else:
                break
    except (ValueError, IndexError):
        pass
    return position(text, best)


def _skip_value(text: str, i: int) -> int:
    """Index after the value at `i` and its following comma and whitespace."""
    _, i = _DECODER.raw_decode(text, i)
    i = _WS.match(text, i).end()  # type: ignore[union-attr]
    if i < len(text) and text[i] == ",":
        i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
    return i
