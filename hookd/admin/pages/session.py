"""Sign-in sessions and CSRF tokens for the status page, as pure functions of a key.

A browser cannot send the admin bearer token on a link or a form, so signing in trades
it for a cookie: ``<expiry>.<HMAC(key, expiry)>``, `HttpOnly` and `SameSite=Strict`.
Nothing is stored server-side: the key is derived from the state directory's server
secret *and* the admin token, so rotating the token signs every browser out, and a
restart does not.

Every form that changes something carries a CSRF token, ``HMAC(key, "csrf" + cookie)``:
tied to the session, so a token read from one browser is useless in another. On top of
it `cross_site` refuses requests a browser marks as coming from another site
(``Sec-Fetch-Site``, else ``Origin``), which also covers the sign-in form itself.

>>> keys = SessionKeys(b"k" * 32)
>>> cookie = keys.issue(now=1000.0)
>>> keys.valid(cookie, now=1001.0), keys.valid(cookie, now=1000.0 + TTL + 1)
(True, False)
>>> keys.csrf_ok(cookie, keys.csrf(cookie)), keys.csrf_ok(cookie, "x")
(True, False)
>>> cross_site({"sec-fetch-site": "cross-site"}, "127.0.0.1:8081")
True
>>> cross_site({"origin": "http://127.0.0.1:8081"}, "127.0.0.1:8081")
False
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

COOKIE = "hookd_session"
TTL = 12 * 3600  # seconds a sign-in lasts


def derive_key(server_secret: bytes, admin_token: str) -> bytes:
    return hmac.new(server_secret, b"hookd status page\0" + admin_token.encode(),
                    hashlib.sha256).digest()


class SessionKeys:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def issue(self, *, now: float) -> str:
        expiry = str(int(now + TTL))
        return f"{expiry}.{self._mac('session' + expiry)}"

    def valid(self, cookie: str | None, *, now: float) -> bool:
        if not cookie or "." not in cookie:
            return False
        expiry, mac = cookie.split(".", 1)
        if not expiry.isdigit() or not hmac.compare_digest(mac, self._mac("session" + expiry)):
            return False
        return now < int(expiry)

    def csrf(self, cookie: str) -> str:
        return self._mac("csrf" + cookie)

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        if not cookie or not token:
            return False
        return hmac.compare_digest(self.csrf(cookie), token)


def cross_site(headers: Mapping[str, str], host: str) -> bool:
    """Does the browser say this request comes from another site? Browsers send
    ``Sec-Fetch-Site`` on every request (``none`` when the user typed the address);
    older ones send ``Origin`` on POSTs. A request with neither (curl) is not
    cross-site: it cannot carry the victim's cookie anyway."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin == "null":
        return True
    return urlsplit(origin).netloc.lower() != host.lower()
