"""What every verification scheme provides, and how it says no."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from hookd.connectors.model import Verification


class VerificationFailed(Exception):
    """The request does not prove it comes from the upstream; `reason` says why (no secrets)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Scheme(Protocol):
    """A module of `hookd.callbacks.schemes`: its `KIND`, `DELIVERY_ID`, `verify` and `sign`."""

    KIND: str
    # The header that identifies a message for dedup when the connector names none.
    DELIVERY_ID: str | None

    def verify(self, v: Verification, secret: str, headers: Mapping[str, str], body: bytes,
               now: float) -> None:
        """Raise `VerificationFailed` unless the request carries valid proof; `headers`
        have lower-case names and `secret` is not empty."""

    def sign(self, v: Verification, secret: str, body: bytes, now: float,
             msg_id: str | None) -> dict[str, str]:
        """The headers an upstream would send with `body`."""


def required_header(v: Verification, headers: Mapping[str, str]) -> str:
    """The value of the scheme's `header` (lower-case lookup), or `VerificationFailed`."""
    given = headers.get(v.header.lower())
    if given is None:
        raise VerificationFailed(f"missing {v.header} header")
    return given
