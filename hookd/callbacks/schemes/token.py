"""``token``: the secret itself in `header` (GitLab's ``X-Gitlab-Token``)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from hookd.callbacks.schemes.scheme import VerificationFailed, required_header
from hookd.connectors.model import Verification

KIND = "token"
DELIVERY_ID = None  # the connector's x-hookd-delivery-id, if any, names it


def verify(v: Verification, secret: str, headers: Mapping[str, str], body: bytes,
           now: float) -> None:
    given = required_header(v, headers)
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode()):
        raise VerificationFailed(f"wrong {v.header}")


def sign(v: Verification, secret: str, body: bytes, now: float,
         msg_id: str | None) -> dict[str, str]:
    return {v.header: secret}
