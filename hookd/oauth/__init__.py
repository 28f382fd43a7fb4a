"""OAuth 2.0 for connections, the pure half: which endpoints a provider has
(`providers`), the authorization request with PKCE and its redirect (`authorization`),
token responses and when to refresh (`tokens`). The I/O lives in `hookd.upstream.oauth`
(token endpoint), `hookd.store.tokens` (where tokens are kept) and ``hookd connect``.
"""
