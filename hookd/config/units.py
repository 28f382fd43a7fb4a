"""Parsers for the human-friendly durations and sizes written in config files.

People write ``timeout: 5m`` and ``max_body: 25MiB``; the typed model holds seconds
(float) and bytes (int). A bare number is already seconds or bytes. The JSON Schemas
accept the same forms (see `DURATION_PATTERN`, `SIZE_PATTERN`), so an editor flags
``5 minutes`` before `hookd check` does.

>>> parse_duration("1h30m"), parse_duration("250ms"), parse_duration(90)
(5400.0, 0.25, 90.0)
>>> parse_size("25MiB"), parse_size("1.5k"), parse_size(100)
(26214400, 1500, 100)
"""

from __future__ import annotations

import re

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
}  # fmt: skip

# Kept in sync with hookd/config/schemas/*.json ($defs duration / size); tests/test_units checks it.
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*)+$|^\s*\d+(\.\d+)?\s*$"
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([kKmMgG]i?[bB]?|[bB])?\s*$"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")


def parse_duration(value: str | int | float) -> float:
    """Seconds in `value`: a number, or parts like ``30s``, ``5m``, ``1h30m``, ``2d``.

    Raises `ValueError` on anything else (the schema has already said so, with position).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"negative duration: {value!r}")
        return float(value)
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {value!r} (write e.g. 30s, 5m, 1h30m)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def parse_size(value: str | int | float) -> int:
    """Bytes in `value`: a number or ``512``, ``64KiB``, ``25MiB``, ``1GB`` (k = 1000, Ki = 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"negative size: {value!r}")
        return int(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (write e.g. 512KiB, 25MiB)")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])
