"""``hmac-sha256``: HMAC-SHA256 of the raw body, in `header`, after `prefix`, hex or base64.

GitHub: ``X-Hub-Signature-256: sha256=<hex>``; Gitea: ``X-Gitea-Signature: <hex>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from hookd.callbacks.schemes.scheme import VerificationFailed, required_header
from hookd.connectors.model import Verification

KIND = "hmac-sha256"
DELIVERY_ID = None  # the connector's x-hookd-delivery-id, if any, names it


def verify(v: Verification, secret: str, headers: Mapping[str, str], body: bytes,
           now: float) -> None:
    given = required_header(v, headers)
    if not given.startswith(v.prefix):
        raise VerificationFailed(f"{v.header} does not start with {v.prefix!r}")
    try:
        digest = _decode(given[len(v.prefix):].strip(), v.encoding)
    except ValueError:
        raise VerificationFailed(f"{v.header} is not {v.encoding}") from None
    expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    if not hmac.compare_digest(digest, expected):
        raise VerificationFailed(f"{v.header} does not match the body")


def sign(v: Verification, secret: str, body: bytes, now: float,
         msg_id: str | None) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    text = digest.hex() if v.encoding == "hex" else base64.b64encode(digest).decode()
    return {v.header: v.prefix + text}


def _decode(text: str, encoding: str) -> bytes:
    if encoding == "hex":
        return bytes.fromhex(text)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
