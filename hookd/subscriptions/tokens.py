"""Callback-URL tokens and per-subscription signing secrets, derived from one server secret.

Every callback URL hookd hands to an upstream is ``{public_url}/hooks/{sub_id}/{token}``.
The token is an HMAC of the subscription id under a 32-byte server secret kept in the state
directory, so it is:

- unguessable (without the secret file nobody can mint a valid URL),
- deterministic (the same subscription gets the same URL after a restart, which lets the
  reconciler recognise — and adopt — a hook it created before a crash),
- recognisably hookd's (prefix ``hkd1_``; the ``1`` is the derivation version).

The per-subscription signing secret (sent to upstreams that sign deliveries, e.g. GitHub's
``config.secret``) is derived the same way under a different label, so a hook found upstream
after a crash can be adopted without ever having seen the secret we sent.

>>> secret = bytes(32)
>>> url = callback_url("https://hooks.example.net/", "ci-1a2b", callback_token(secret, "ci-1a2b"))
>>> url.startswith("https://hooks.example.net/hooks/ci-1a2b/hkd1_")
True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

SECRET_FILE = "server.secret"
TOKEN_PREFIX = "hkd1_"
_SECRET_BYTES = 32


def load_or_create_server_secret(state_dir: Path) -> bytes:
    """Return the server secret, creating ``state_dir/server.secret`` (mode 0600) once.

    Creation is atomic (``O_EXCL``), so two processes starting together agree on one secret.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        data = path.read_bytes()
        if len(data) != _SECRET_BYTES:
            raise ValueError(
                f"{path}: expected {_SECRET_BYTES} bytes, found {len(data)}; "
                "the server secret file is damaged (removing it invalidates every callback URL)"
            ) from None
        return data
    value = secrets.token_bytes(_SECRET_BYTES)
    try:
        os.write(fd, value)
        os.fsync(fd)
    finally:
        os.close(fd)
    return value


def _derive(secret: bytes, label: bytes, subscription_id: str) -> str:
    mac = hmac.new(secret, label + b"\0" + subscription_id.encode("utf-8"), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode("ascii").rstrip("=")


def callback_token(secret: bytes, subscription_id: str) -> str:
    """The URL token for `subscription_id`: ``hkd1_`` + 43 url-safe characters."""
    return TOKEN_PREFIX + _derive(secret, b"hookd-callback-v1", subscription_id)


def verify_token(secret: bytes, subscription_id: str, token: str) -> bool:
    """True when `token` is the callback token of `subscription_id` (constant time)."""
    expected = callback_token(secret, subscription_id)
    return hmac.compare_digest(expected.encode("ascii"), token.encode("utf-8", "replace"))


def signing_secret(secret: bytes, subscription_id: str) -> str:
    """The secret hookd gives the upstream to sign deliveries of `subscription_id`."""
    return _derive(secret, b"hookd-signing-v1", subscription_id)


def callback_url(public_url: str, sub_id: str, token: str) -> str:
    """``{public_url}/hooks/{sub_id}/{token}`` (a trailing slash on public_url is ignored)."""
    return f"{callback_prefix(public_url)}{sub_id}/{token}"


def callback_prefix(public_url: str) -> str:
    """The part every hookd callback URL of this installation starts with."""
    return f"{public_url.rstrip('/')}/hooks/"


def parse_callback_url(public_url: str, url: str) -> tuple[str, str] | None:
    """``(sub_id, token)`` when `url` has this installation's callback shape, else None.

    Shape only: call `verify_token` to know whether hookd really minted it.
    """
    prefix = callback_prefix(public_url)
    if not url.startswith(prefix):
        return None
    rest = url[len(prefix):].split("?", 1)[0].rstrip("/")
    parts = rest.split("/")
    if len(parts) != 2 or not parts[0] or not parts[1].startswith(TOKEN_PREFIX):
        return None
    return parts[0], parts[1]
