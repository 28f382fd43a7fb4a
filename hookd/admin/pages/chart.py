"""The overview's picture of the last 24 h as inline SVG, drawn on the server.

Two panels over one time axis: deliveries per minute (an area) and failed runs per minute
(bars, with a scale of their own: a handful of failures must stay visible next to
thousands of deliveries). Colours come from CSS classes, so the page's light and dark
themes apply; a `<title>` and `<desc>` carry the same facts in words for screen readers.
Runs of equal minutes become one path segment, so a quiet day is a few hundred bytes.

>>> svg = draw([Minute(0.0, 3, 0), Minute(60.0, 5, 1)], now=120.0)
>>> svg.startswith("<svg") and "8 deliveries" in svg and "1 failed run" in svg
True
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

from hookd.store.activity import Minute

WIDTH, HEIGHT = 760, 210
LEFT, RIGHT = 44, 750
TOP_PANEL = (12, 128)  # y of the top and the baseline of the deliveries panel
BOTTOM_PANEL = (146, 186)  # the failed-runs panel
TICKS = 6  # time labels along the axis (every 4 h over 24 h)


def _nice_max(value: int) -> int:
    """The axis maximum: 1, 2 or 5 times a power of ten, at least `value`.

    >>> [_nice_max(v) for v in (0, 1, 3, 7, 12, 480)]
    [1, 1, 5, 10, 20, 500]
    """
    top = 1
    while True:
        for step in (1, 2, 5):
            if top * step >= value:
                return top * step
        top *= 10


def _steps(values: Sequence[int], top: int, panel: tuple[int, int]) -> str:
    """An area path for `values` (one per x slot), equal neighbours merged."""
    y0, base = panel
    n = max(len(values), 1)
    width = (RIGHT - LEFT) / n
    parts = [f"M{LEFT},{base}"]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        y = base - (base - y0) * values[i] / top
        parts.append(f"V{y:.1f}H{LEFT + (j + 1) * width:.1f}")
        i = j + 1
    parts.append(f"V{base}Z")
    return "".join(parts)


def _bars(values: Sequence[int], top: int, panel: tuple[int, int]) -> str:
    """One thin bar per non-zero slot (failures are rare: only those are drawn)."""
    y0, base = panel
    width = (RIGHT - LEFT) / max(len(values), 1)
    parts = []
    for i, v in enumerate(values):
        if v:
            h = (base - y0) * v / top
            parts.append(f"M{LEFT + i * width:.1f},{base}v{-h:.1f}h{max(width, 1.5):.1f}v{h:.1f}Z")
    return "".join(parts)


def _clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%H:%M")


def draw(buckets: Sequence[Minute], *, now: float) -> str:
    """The SVG element (a string of markup, safe to embed as is)."""
    deliveries = [b.deliveries for b in buckets]
    failed = [b.failed_runs for b in buckets]
    total, failures = sum(deliveries), sum(failed)
    top, fail_top = _nice_max(max(deliveries, default=0)), _nice_max(max(failed, default=0))
    peak = max(range(len(deliveries)), key=deliveries.__getitem__, default=None)
    desc = (f"{total} deliveries and {failures} failed run{'s' if failures != 1 else ''} "
            "in the last 24 hours")
    if peak is not None and deliveries[peak]:
        desc += f"; busiest minute {_clock(buckets[peak].start)} UTC with {deliveries[peak]}"
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Deliveries and failed runs per minute, last 24 h</title>',
        f'<desc id="chart-desc">{escape(desc)}.</desc>',
        f'<path class="chart-grid" d="M{LEFT},{TOP_PANEL[0]}H{RIGHT}M{LEFT},{TOP_PANEL[1]}H{RIGHT}'
        f'M{LEFT},{BOTTOM_PANEL[0]}H{RIGHT}M{LEFT},{BOTTOM_PANEL[1]}H{RIGHT}"/>',
        f'<path class="chart-deliveries" d="{_steps(deliveries, top, TOP_PANEL)}"/>',
        f'<path class="chart-failed" d="{_bars(failed, fail_top, BOTTOM_PANEL)}"/>',
        f'<text class="chart-label" x="{LEFT - 6}" y="{TOP_PANEL[0] + 4}" '
        f'text-anchor="end">{top}</text>',
        f'<text class="chart-label" x="{LEFT - 6}" y="{TOP_PANEL[1]}" text-anchor="end">0</text>',
        f'<text class="chart-label" x="{LEFT - 6}" y="{BOTTOM_PANEL[0] + 4}" '
        f'text-anchor="end">{fail_top}</text>',
        f'<text class="chart-label" x="{LEFT - 6}" y="{BOTTOM_PANEL[1]}" text-anchor="end">0</text>',
        f'<text class="chart-caption" x="{LEFT + 4}" y="{TOP_PANEL[0] + 12}">'
        'deliveries / min</text>',
        f'<text class="chart-caption chart-caption-failed" x="{LEFT + 4}" '
        f'y="{BOTTOM_PANEL[0] + 12}">failed runs / min</text>',
    ]
    span = 24 * 3600
    for k in range(TICKS + 1):
        ts = now - span + k * span / TICKS
        x = LEFT + (RIGHT - LEFT) * k / TICKS
        anchor = "start" if k == 0 else "end" if k == TICKS else "middle"
        label = "now" if k == TICKS else _clock(ts)
        out.append(f'<text class="chart-label" x="{x:.1f}" y="{HEIGHT - 6}" '
                   f'text-anchor="{anchor}">{label}</text>')
    out.append("</svg>")
    return "".join(out)
