"""A raw body becomes the deliveries to record: checked, a batch split into its items,
a schema warning flagged — the same for every backend (the SQLite engine does it in its
writer thread, the PostgreSQL inbox before handing the batch over)."""

from __future__ import annotations

import dataclasses
import logging

from hookd.callbacks import payload
from hookd.callbacks.payload import SchemaCheck
from hookd.store.records import FLAG_SCHEMA_WARNING, NewDelivery

log = logging.getLogger("hookd.store.bodies")


def examined(delivery: NewDelivery, check: SchemaCheck | None, policy: str,
             batch: bool) -> list[NewDelivery]:
    """The deliveries `delivery`'s raw body becomes (`payload.examine`); raises
    `payload.Refused`. The common case (a body as received) returns `[delivery]` itself."""
    result = payload.examine(delivery.body, check, policy, batch)
    flags = delivery.flags
    if result.problems:
        flags = (*flags, FLAG_SCHEMA_WARNING)
        log.warning("payload does not match the trigger's schema",
                    extra={"flow": delivery.flow, "violations": result.problems})
    if result.items == [None] and flags == delivery.flags:
        return [delivery]
    return [dataclasses.replace(delivery, body=body, item=item, flags=flags)
            for body, item in zip(result.bodies, result.items, strict=True)]
