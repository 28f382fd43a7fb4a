"""Sign-in sessions and CSRF tokens for the status page, as pure functions of a key.

A browser cannot send the admin bearer token on a link or a form, so signing in trades
it for a cookie: ``<expiry>.<HMAC(key, expiry)>``, `HttpOnly` and `SameSite=Strict`.
Nothing is stored server-side: the key is derived from the state directory's server
secret *and* the admin token, so rotating the token signs every browser out, and a
restart does not.

Every form that changes something carries a CSRF token, ``HMAC(key, "csrf" + cookie)``:
tied to the session, so a token read from one browser is useless in another. On top of
it the page refuses requests a browser marks as coming from another origin
(`hookd.admin.auth.cross_site`, the admin listener's one rule), the sign-in form too.

>>> keys = SessionKeys(b"k" * 32)
>>> cookie = keys.issue(now=1000.0)
>>> keys.valid(cookie, now=1001.0), keys.valid(cookie, now=1000.0 + TTL + 1)
(True, False)
>>> keys.csrf_ok(cookie, keys.csrf(cookie)), keys.csrf_ok(cookie, "x")
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac

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
