"""Live updates: new deliveries and runs as Server-Sent Events (``GET /live``).

A page that shows live tables embeds a cursor (`cursor`: the newest delivery and run ids
when it was rendered); `static/live.js` opens ``/live?after=<cursor>`` and inserts each
event's row, rendered by the same template macro the page used. Without JavaScript the
page keeps its "refresh" link.

The stream polls the store once a second (`POLL`): runs are written by the worker, which
may be another process, so there is no in-process signal to wait for. A stream ends
after `LIFETIME` (the browser reconnects by itself, with ``Last-Event-ID`` carrying the
cursor) and when the daemon drains, so a shutdown never waits on an open page.

>>> parse_cursor(cursor("d1", "r1")), parse_cursor("junk"), parse_cursor(None)
(('d1', 'r1'), ('', ''), ('', ''))
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence

from starlette.requests import Request
from starlette.responses import StreamingResponse

from hookd.admin.pages import models as m
from hookd.admin.pages import queries, render
from hookd.admin.pages.reads import Reads
from hookd.store.activity import DeliverySummary

POLL = 1.0  # seconds between two looks at the store
LIFETIME = 300.0  # seconds a stream stays open before the browser reconnects
HEARTBEAT = 15.0  # seconds between comments that keep proxies from closing the stream
MAX_WATCH = 50  # unfinished runs one page may follow


def cursor(delivery_id: str, run_id: str) -> str:
    return f"{delivery_id}~{run_id}"


def parse_cursor(text: str | None) -> tuple[str, str]:
    if not text or "~" not in text:
        return "", ""
    d, r = text.split("~", 1)
    return d, r


def _event(kind: str, ident: str, data: dict[str, object]) -> str:
    return f"event: {kind}\nid: {ident}\ndata: {json.dumps(data)}\n\n"


def delivery_event(row: DeliverySummary, now: float) -> dict[str, object]:
    html = render.render("rows.html", kind="delivery", row=row, now=now)
    return {"id": row.id, "flow": row.flow, "status": row.status, "html": html.strip()}


def run_event(row: m.RunSummary, now: float) -> dict[str, object]:
    html = render.render("rows.html", kind="run", row=row, now=now)
    return {"id": row.id, "delivery": row.delivery_id, "flow": row.flow,
            "status": row.status, "html": html.strip()}


def stream(request: Request, store: Reads, *, draining: Callable[[], bool]) -> StreamingResponse:
    q = request.query_params
    after_d, after_r = parse_cursor(request.headers.get("last-event-id") or q.get("after"))
    flow, status = q.get("flow") or None, q.get("status") or None
    watching: Sequence[str] = [w for w in (q.get("watch") or "").split(",") if w][:MAX_WATCH]

    async def events() -> AsyncIterator[str]:
        nonlocal after_d, after_r, watching
        yield "retry: 2000\n: hookd live\n\n"
        started = last_sent = time.monotonic()
        states: dict[str, str] = {}
        while time.monotonic() - started < LIFETIME and not draining():
            new, runs = await queries.changes(store, after_delivery=after_d, after_run=after_r,
                                              watching=watching)
            now = time.time()
            for d in new:
                after_d = d.id
                if (flow is None or d.flow == flow) and (status is None or d.status == status):
                    last_sent = time.monotonic()
                    yield _event("delivery", cursor(after_d, after_r), delivery_event(d, now))
            for r in runs:
                if r.id > after_r:
                    after_r = r.id
                if states.get(r.id) == r.status:
                    continue
                states[r.id] = r.status
                if flow is None or r.flow == flow:
                    last_sent = time.monotonic()
                    yield _event("run", cursor(after_d, after_r), run_event(r, now))
            # Follow the runs seen until they finish (their status changes are events too).
            watching = ([i for i, s in states.items() if s in ("queued", "running")]
                        + [w for w in watching if w not in states])[:MAX_WATCH]
            if time.monotonic() - last_sent > HEARTBEAT:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL)

    return StreamingResponse(events(), media_type="text/event-stream", headers={
        "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
