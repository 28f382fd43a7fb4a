"""Token responses (RFC 6749 §5) and the decisions about them: keep, refresh, give up.

A `TokenSet` is what a connection holds between runs. Its `repr` shows no token, and
nothing here puts one in a message: errors quote the provider's ``error`` and
``error_description`` only. Refreshing happens `REFRESH_AHEAD` seconds before expiry
(a tenth of the lifetime for short-lived tokens), so a request never leaves with a token
that expires on the way; a 401 makes the caller refresh once more whatever the clock says.

A refresh token the provider refuses (``invalid_grant``: revoked, expired, or rotated
away) is kept as ``error`` on the set, so ``hookd status`` and ``hookd check`` can say so
and name the fix (``hookd connect NAME``) without asking the provider again. Pure code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

REFRESH_AHEAD = 60.0  # seconds before expiry a token is refreshed
# Errors of a token response after which only a new authorization helps (RFC 6749 §5.2).
REAUTHORIZE = frozenset({"invalid_grant", "invalid_client", "unauthorized_client",
                         "invalid_scope", "unsupported_grant_type"})


class TokenError(Exception):
    """The token endpoint refused; `reauthorize` when only ``hookd connect`` helps."""

    def __init__(self, message: str, *, reauthorize: bool = False, code: str = "") -> None:
        super().__init__(message)
        self.reauthorize = reauthorize
        self.code = code


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None  # unix time; None when the provider did not say
    token_type: str = "Bearer"
    scope: str = ""
    obtained_at: float = 0.0
    error: str = ""  # why the refresh token stopped working; "" while it works

    def to_json(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "refresh_token": self.refresh_token,
                "expires_at": self.expires_at, "token_type": self.token_type,
                "scope": self.scope, "obtained_at": self.obtained_at, "error": self.error}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenSet:
        expires = data.get("expires_at")
        return cls(
            access_token=str(data.get("access_token") or ""),
            refresh_token=data.get("refresh_token") or None,
            expires_at=float(expires) if isinstance(expires, int | float) else None,
            token_type=str(data.get("token_type") or "Bearer"),
            scope=str(data.get("scope") or ""),
            obtained_at=float(data.get("obtained_at") or 0.0),
            error=str(data.get("error") or ""),
        )


def from_response(data: Any, now: float, previous: TokenSet | None = None) -> TokenSet:
    """The tokens of a successful token response. A response without ``refresh_token``
    keeps the previous one (RFC 6749 §6: the server MAY issue a new one); one with it
    replaces it (rotation). Raises `TokenError` for a malformed answer.

    >>> t = from_response({"access_token": "a", "expires_in": 3600, "refresh_token": "r"}, 100.0)
    >>> t.expires_at, t.refresh_token, t
    (3700.0, 'r', TokenSet(expires_at=3700.0, token_type='Bearer', scope='', obtained_at=100.0, error=''))
    >>> from_response({"access_token": "b"}, 200.0, t).refresh_token
    'r'
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("access_token"), str) \
            or not data["access_token"]:
        raise TokenError("the token endpoint answered without an access_token")
    expires_in = data.get("expires_in")
    try:
        lifetime = float(expires_in) if expires_in not in (None, "") else None
    except (TypeError, ValueError):
        lifetime = None
    refresh = data.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        refresh = previous.refresh_token if previous is not None else None
    return TokenSet(
        access_token=data["access_token"],
        refresh_token=refresh,
        expires_at=now + lifetime if lifetime is not None else None,
        token_type=str(data.get("token_type") or "Bearer"),
        scope=str(data.get("scope") or (previous.scope if previous else "")),
        obtained_at=now,
    )


def error_of(status: int, data: Any) -> TokenError:
    """The `TokenError` of a failed token response (``error``/``error_description`` only).

    >>> e = error_of(400, {"error": "invalid_grant", "error_description": "revoked"})
    >>> str(e), e.reauthorize
    ('the token endpoint refused: invalid_grant (revoked)', True)
    """
    code = str(data.get("error") or "") if isinstance(data, Mapping) else ""
    text = str(data.get("error_description") or "")[:200] if isinstance(data, Mapping) else ""
    what = code or f"HTTP {status}"
    message = f"the token endpoint refused: {what}{f' ({text})' if text else ''}"
    return TokenError(message, reauthorize=code in REAUTHORIZE or status == 401, code=code)


def needs_refresh(tokens: TokenSet, now: float) -> bool:
    """True when `tokens` expires within `REFRESH_AHEAD` (a tenth of its lifetime if that
    is shorter), or has expired.

    >>> t = TokenSet("a", "r", expires_at=1000.0, obtained_at=0.0)
    >>> needs_refresh(t, 900.0), needs_refresh(t, 950.0)
    (False, True)
    """
    if tokens.expires_at is None:
        return False
    lifetime = tokens.expires_at - tokens.obtained_at
    ahead = min(REFRESH_AHEAD, lifetime / 10) if lifetime > 0 else REFRESH_AHEAD
    return now >= tokens.expires_at - ahead


def expired(tokens: TokenSet) -> TokenSet:
    """The same tokens, marked as expired (after a 401): the next use refreshes."""
    return replace(tokens, expires_at=tokens.obtained_at)


def problem(tokens: TokenSet | None, now: float, *, seeded: bool) -> str:
    """Why a connection has no usable token ("" when it has one, or can get one).

    >>> problem(None, 0.0, seeded=False)
    'no OAuth token'
    >>> problem(TokenSet("a", None, expires_at=10.0), 20.0, seeded=False)
    'the OAuth token expired and there is no refresh token'
    """
    if tokens is None:
        return "" if seeded else "no OAuth token"
    if tokens.error:
        return f"the refresh token no longer works ({tokens.error})"
    if tokens.refresh_token is None and tokens.expires_at is not None and now >= tokens.expires_at:
        return "the OAuth token expired and there is no refresh token"
    return ""
