"""Where the HTTP boundary gets OAuth2 access tokens: the seam for ``hookd connect``.

`hookd.upstream.client.Upstream` asks its `TokenSource` for the access token of a
connection whose credential is ``oauth2`` (`hookd.connectors.auth`) each time it builds a
request. When the upstream answers 401 to a request carrying a token from the source,
`Upstream.send` calls `invalidate`, asks again and, given a different token, retries
once with it — so a source that refreshes tokens only has to refresh on `invalidate`.
`hookd.upstream.oauth.OAuthTokens` is the source for ``oauth:`` connections (tokens from
``hookd connect``); `StaticTokens` has no source of its own: the connection's static
``token`` parameter is used (``None`` means exactly that).
"""

from __future__ import annotations

from typing import Protocol


class TokenSource(Protocol):
    """Connection-level OAuth2 access tokens."""

    async def access_token(self, connection: str) -> str | None:
        """A valid access token for `connection`, or None to use its static ``token``."""
        ...

    async def invalidate(self, connection: str) -> None:
        """The upstream refused the last token of `connection` (401)."""
        ...


class StaticTokens:
    """No token source: every oauth2 connection uses its ``token`` parameter."""

    async def access_token(self, connection: str) -> str | None:
        return None

    async def invalidate(self, connection: str) -> None:
        return None
