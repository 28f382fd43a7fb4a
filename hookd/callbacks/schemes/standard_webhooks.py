"""``standard-webhooks`` (https://www.standardwebhooks.com).

HMAC-SHA256 of ``{webhook-id}.{webhook-timestamp}.{body}``, base64, in
``webhook-signature`` as a space-separated list of ``v1,<base64>`` (several during a
secret rotation; any one matching is enough), with the timestamp within `tolerance`
seconds of now (replay protection). A secret ``whsec_<base64>`` is the base64 of the key;
any other secret is used as UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping

from hookd.callbacks.schemes.scheme import VerificationFailed
from hookd.connectors.model import Verification

KIND = "standard-webhooks"
SW_ID, SW_TIMESTAMP, SW_SIGNATURE = "webhook-id", "webhook-timestamp", "webhook-signature"
# The spec makes webhook-id the idempotency key ("the same when a message is retried") and
# expects receivers to drop a message whose id they have seen: within the tolerance a
# captured request is otherwise a valid replay. Dedup on it when the connector names none.
DELIVERY_ID = SW_ID


def verify(v: Verification, secret: str, headers: Mapping[str, str], body: bytes,
           now: float) -> None:
    msg_id, ts, sigs = headers.get(SW_ID), headers.get(SW_TIMESTAMP), headers.get(SW_SIGNATURE)
    if msg_id is None or ts is None or sigs is None:
        raise VerificationFailed("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(ts)
    except ValueError:
        raise VerificationFailed("webhook-timestamp is not an integer") from None
    if abs(now - timestamp) > v.tolerance:
        raise VerificationFailed("webhook-timestamp outside the tolerance (replay or clock skew)")
    try:
        key = standard_key(secret)
    except ValueError:
        raise VerificationFailed("the subscription's whsec_ secret is not base64") from None
    expected = hmac.new(key, _content(msg_id, timestamp, body), hashlib.sha256).digest()
    for entry in sigs.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue  # other schemes (v1a: asymmetric) are not ours to check
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(given, expected):
            return
    raise VerificationFailed("no webhook-signature matches")


def sign(v: Verification, secret: str, body: bytes, now: float,
         msg_id: str | None) -> dict[str, str]:
    msg_id = msg_id or "msg_" + os.urandom(12).hex()
    ts = int(now)
    mac = hmac.new(standard_key(secret), _content(msg_id, ts, body), hashlib.sha256)
    return {
        SW_ID: msg_id,
        SW_TIMESTAMP: str(ts),
        SW_SIGNATURE: "v1," + base64.b64encode(mac.digest()).decode(),
    }


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64, or plain text)."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    return secret.encode()


def _content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode("utf-8", "surrogateescape") + body
