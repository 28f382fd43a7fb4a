"""Durations and sizes as people write them, and the schema patterns that accept them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hookd.config.units import DURATION_PATTERN, SIZE_PATTERN, parse_duration, parse_size

SCHEMAS = Path(__file__).resolve().parent.parent / "hookd" / "config" / "schemas"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0),
     ("250ms", 0.25), ("2d", 172800.0), ("1w", 604800.0), (" 10 m ", 600.0), ("1.5h", 5400.0)],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds
    if isinstance(text, str):
        assert re.search(DURATION_PATTERN, text)


@pytest.mark.parametrize("text", ["5 minutes", "m", "", "-1s", "1h-30m", True, -3])
def test_bad_durations_are_rejected_by_parser_and_pattern(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)  # type: ignore[arg-type]
    if isinstance(text, str):
        assert not re.search(DURATION_PATTERN, text)


@pytest.mark.parametrize(
    ("text", "size"),
    [(100, 100), ("512", 512), ("64KiB", 65536), ("25MiB", 26214400), ("1GB", 10**9),
     ("1.5k", 1500), ("2Mi", 2 * 1024**2), ("10 B", 10)],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size
    if isinstance(text, str):
        assert re.search(SIZE_PATTERN, text)


@pytest.mark.parametrize("text", ["25 megabytes", "MiB", "1TB", "-1", False])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)  # type: ignore[arg-type]
    if isinstance(text, str):
        assert not re.search(SIZE_PATTERN, text)


def test_the_schemas_use_the_same_patterns() -> None:
    for name in ("hookd", "flow"):
        defs = json.loads((SCHEMAS / f"{name}.schema.json").read_text())["$defs"]
        assert defs["duration"]["pattern"] == DURATION_PATTERN
        assert defs["size"]["pattern"] == SIZE_PATTERN
