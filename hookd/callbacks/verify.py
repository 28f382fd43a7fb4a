"""Does this notification really come from the upstream? Pure signature checks.

Each connector declares how its upstream proves a delivery is genuine
(`hookd.connectors.model.Verification`, from ``x-hookd-verify``); this module checks a request
against that declaration and, for `hookd send`, tests and benchmarks, produces the
headers an upstream would send. It does no I/O: the secret and the clock are passed in,
so the checks are table-tested.

The kinds (``hmac-sha256``, ``token``, ``standard-webhooks``, ``none``) are one module each
in `hookd.callbacks.schemes`; this is the one entry point, and the one rule they share:
a connector that signs but has no secret to check with is refused, never accepted.

Every comparison of a secret-derived value is constant time (`hmac.compare_digest`).
Failure reasons are for logs and metrics; they never contain the secret or the expected
signature.
"""

from __future__ import annotations

from collections.abc import Mapping

from hookd.callbacks.schemes import SCHEMES
from hookd.callbacks.schemes.scheme import VerificationFailed
from hookd.connectors.model import Verification

__all__ = ["VerificationFailed", "sign", "verify"]


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
    scheme = SCHEMES.get(v.kind)
    if scheme is None:  # pragma: no cover - the connector loader rejects unknown kinds
        raise VerificationFailed(f"unknown verification kind {v.kind!r}")
    scheme.verify(v, secret, headers, body, now)


def sign(
    v: Verification, secret: str, body: bytes, *, now: float, msg_id: str | None = None
) -> dict[str, str]:
    """The headers an upstream would send with `body` (for `hookd send`, tests, benchmarks).

    >>> sign(Verification("hmac-sha256", "X-Hub-Signature-256", "sha256="),
    ...      "It's a Secret to Everybody", b"Hello, World!", now=0)
    {'X-Hub-Signature-256': 'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17'}
    """
    scheme = SCHEMES.get(v.kind)
    return scheme.sign(v, secret, body, now, msg_id) if scheme is not None else {}
