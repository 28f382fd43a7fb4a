"""Does this notification really come from the upstream? Pure signature checks.

Each connector declares how its upstream proves a delivery is genuine
(`hookd.connectors.model.Verification`, from ``x-hookd-verify``); this module checks a request
against that declaration and, for `hookd send`, tests and benchmarks, produces the
headers an upstream would send. It does no I/O: the secret and the clock are passed in,
so the checks are table-tested.

Kinds:

- ``hmac-sha256``: HMAC-SHA256 of the raw body, in `header`, after `prefix`, hex or
  base64. GitHub: ``X-Hub-Signature-256: sha256=<hex>``; Gitea: ``X-Gitea-Signature: <hex>``.
- ``token``: the secret itself in `header` (GitLab ``X-Gitlab-Token``).
- ``standard-webhooks`` (https://www.standardwebhooks.com): HMAC-SHA256 of
  ``{webhook-id}.{webhook-timestamp}.{body}``, base64, in ``webhook-signature`` as a
  space-separated list of ``v1,<base64>`` (several during a secret rotation; any one
  matching is enough), with the timestamp within `tolerance` seconds of now (replay
  protection). A secret ``whsec_<base64>`` is the base64 of the key; any other secret is
  used as UTF-8 bytes.
- ``none``: nothing to check; the unguessable callback URL is the credential (as in
  Power Automate's "When an HTTP request is received").

Every comparison of a secret-derived value is constant time (`hmac.compare_digest`).
Failure reasons are for logs and metrics; they never contain the secret or the expected
signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping

from hookd.connectors.model import Verification

SW_ID, SW_TIMESTAMP, SW_SIGNATURE = "webhook-id", "webhook-timestamp", "webhook-signature"


class VerificationFailed(Exception):
    """The request does not prove it comes from the upstream; `reason` says why (no secrets)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify(
    v: Verification, secret: str, headers: Mapping[str, str], body: bytes, *, now: float
) -> None:
    """Raise `VerificationFailed` unless the request carries valid proof.

    `headers` must have lower-case names (as ASGI gives them).
    """
    if v.kind == "none":
        return
    if not secret:
        # A connector that signs, but no secret to check with: refuse rather than accept.
        raise VerificationFailed("no secret configured for this subscription")
    if v.kind == "hmac-sha256":
        _verify_hmac(v, secret, headers, body)
    elif v.kind == "token":
        given = headers.get(v.header.lower())
        if given is None:
            raise VerificationFailed(f"missing {v.header} header")
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode()):
            raise VerificationFailed(f"wrong {v.header}")
    elif v.kind == "standard-webhooks":
        _verify_standard(v, secret, headers, body, now)
    else:  # pragma: no cover - the connector loader rejects unknown kinds
        raise VerificationFailed(f"unknown verification kind {v.kind!r}")


def _verify_hmac(v: Verification, secret: str, headers: Mapping[str, str], body: bytes) -> None:
    given = headers.get(v.header.lower())
    if given is None:
        raise VerificationFailed(f"missing {v.header} header")
    if not given.startswith(v.prefix):
        raise VerificationFailed(f"{v.header} does not start with {v.prefix!r}")
    try:
        digest = _decode(given[len(v.prefix):].strip(), v.encoding)
    except ValueError:
        raise VerificationFailed(f"{v.header} is not {v.encoding}") from None
    expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    if not hmac.compare_digest(digest, expected):
        raise VerificationFailed(f"{v.header} does not match the body")


def _verify_standard(
    v: Verification, secret: str, headers: Mapping[str, str], body: bytes, now: float
) -> None:
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
    expected = hmac.new(key, _sw_content(msg_id, timestamp, body), hashlib.sha256).digest()
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


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64, or plain text)."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    return secret.encode()


def _sw_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode("utf-8", "surrogateescape") + body


def _decode(text: str, encoding: str) -> bytes:
    if encoding == "hex":
        return bytes.fromhex(text)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


# ---------------------------------------------------------------------------- signing


def sign(
    v: Verification, secret: str, body: bytes, *, now: float, msg_id: str | None = None
) -> dict[str, str]:
    """The headers an upstream would send with `body` (for `hookd send`, tests, benchmarks).

    >>> sign(Verification("hmac-sha256", "X-Hub-Signature-256", "sha256="),
    ...      "It's a Secret to Everybody", b"Hello, World!", now=0)
    {'X-Hub-Signature-256': 'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17'}
    """
    if v.kind == "hmac-sha256":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        text = digest.hex() if v.encoding == "hex" else base64.b64encode(digest).decode()
        return {v.header: v.prefix + text}
    if v.kind == "token":
        return {v.header: secret}
    if v.kind == "standard-webhooks":
        msg_id = msg_id or "msg_" + os.urandom(12).hex()
        ts = int(now)
        mac = hmac.new(standard_key(secret), _sw_content(msg_id, ts, body), hashlib.sha256)
        return {
            SW_ID: msg_id,
            SW_TIMESTAMP: str(ts),
            SW_SIGNATURE: "v1," + base64.b64encode(mac.digest()).decode(),
        }
    return {}
