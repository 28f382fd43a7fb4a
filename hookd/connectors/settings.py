"""The x-hookd-* settings of one level of a spec (top level or operation), merged.

Its own module because the triggers (which read them) and the strategies (which name
where a bad one was declared) both take it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hookd.connectors import extensions as ext
from hookd.connectors.model import RequestPath, Verification
from hookd.connectors.reader import KeyPath


@dataclass
class Settings:
    """The x-hookd-* settings of one level (top level or operation)."""

    verification: Verification | None = None
    delivery_id: str | None = None
    event_header: str | None = None
    ping_event: str | None = None
    list: ext.ListSpec | None = None
    delete: ext.DeleteSpec | None = None
    update: ext.UpdateSpec | None = None
    secret: RequestPath | None = None
    origin: dict[str, KeyPath] = field(default_factory=dict)  # key → where it was declared

    def set_event(self, header: str | None, ping: str | None) -> None:
        self.event_header, self.ping_event = header, ping

    def over(self, top: Settings) -> Settings:
        """These settings, with `top`'s filling whatever this level does not declare."""
        merged = Settings()
        for name in ("verification", "delivery_id", "event_header", "ping_event", "list",
                     "delete", "update", "secret"):
            mine = getattr(self, name)
            setattr(merged, name, mine if mine is not None else getattr(top, name))
        merged.origin = {**top.origin, **self.origin}
        return merged

    def where(self, key: str) -> KeyPath:
        return self.origin.get(key, (key,))
