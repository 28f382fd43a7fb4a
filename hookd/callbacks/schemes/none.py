"""``none``: nothing to check; the unguessable callback URL is the credential (as in Power
Automate's "When an HTTP request is received")."""

from __future__ import annotations

from collections.abc import Mapping

from hookd.connectors.model import Verification

KIND = "none"
DELIVERY_ID = None  # the connector's x-hookd-delivery-id, if any, names it


def verify(v: Verification, secret: str, headers: Mapping[str, str], body: bytes,
           now: float) -> None:
    return None


def sign(v: Verification, secret: str, body: bytes, now: float,
         msg_id: str | None) -> dict[str, str]:
    return {}
