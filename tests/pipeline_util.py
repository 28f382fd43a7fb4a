"""Builders shared by the pipeline, worker, API and end-to-end tests: typed model objects
constructed directly (as the config loader would produce them) and recorded deliveries."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hookd.config import model
from hookd.store.sqlite import db as dbmod
from hookd.store.sqlite.deliveries import DeliveryStore, NewDelivery

DATA = Path(__file__).resolve().parent / "data" / "pipeline"


def step(id: str, action: model.Action, **kw: Any) -> model.Step:
    return model.Step(id=id, action=action, **kw)


def flow(name: str, steps: Sequence[model.Step], **kw: Any) -> model.Flow:
    trigger = model.Trigger(connector="github", operation="webhook-trigger")
    return model.Flow(name=name, trigger=trigger, steps=tuple(steps), **kw)


def config(state_dir: Path, flows: Sequence[model.Flow], *, workers: int = 8,
           env_allow: tuple[str, ...] = (), shutdown_timeout: float = 5.0) -> model.Config:
    settings = model.Settings(public_url="http://127.0.0.1:1", state_dir=state_dir,
                              workers=workers, env_allow=env_allow,
                              shutdown_timeout=shutdown_timeout)
    return model.Config(directory=state_dir.parent, settings=settings, connectors={},
                        connections={}, flows={f.name: f for f in flows}, revision="test")


def push_payload() -> dict[str, Any]:
    return json.loads((DATA / "push.json").read_text())


def record(state_dir: Path, flow: str, bodies: Sequence[Any], *, event: str = "push",
           headers: Mapping[str, str] | None = None) -> list[str]:
    conn = dbmod.open_db(state_dir)
    try:
        now = time.time()
        return DeliveryStore(conn).record_many([
            NewDelivery(subscription_id="sub1", flow=flow, received_at=now,
                        headers=dict(headers or {"x-github-event": event}),
                        body=json.dumps(b).encode(), event=event)
            for b in bodies
        ])
    finally:
        conn.close()
