"""The Jinja2 environment of the status page and the filters its templates use.

Autoescaping is on for every template; the only markup a template inserts unescaped is
the chart's SVG, built by `hookd.admin.pages.chart` from numbers.

>>> duration(0.0042), duration(3.5), duration(125), duration(None)
('4 ms', '3.5 s', '2 min 5 s', '–')
>>> ago(100.0, now=160.0), utc(0.0)
('1 min ago', '1970-01-01 00:00:00 UTC')
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    seconds = now - ts
    if seconds < 0:
        return "in " + ago(now, now - seconds).removesuffix(" ago")
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def utc(ts: float | None) -> str:
    if ts is None:
        return "–"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts: float | None) -> str:
    """For `<time datetime=…>`."""
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.0f} %"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a typo in a template fails its test
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(duration=duration, utc=utc, iso=iso, percent=percent)
    env.globals.update(ago=ago)
    return env


_ENV: jinja2.Environment | None = None


def render(template: str, **context: Any) -> str:
    global _ENV
    if _ENV is None:
        _ENV = environment()
    return _ENV.get_template(template).render(**context)
