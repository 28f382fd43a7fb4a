"""The admin token: what a browser signs in to the status page with.

A random token kept in the state directory (``admin.token``, mode 0600), created on
first use, so that an operator reads it with ``cat`` on the host (or through the SSH
session that tunnels the admin port) and nobody else can.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

FILE = "admin.token"


def load_or_create(state_dir: Path) -> str:
    path = Path(state_dir) / FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def matches(expected: str, presented: str) -> bool:
    """Constant-time comparison (a timing difference must not reveal the prefix)."""
    return bool(expected) and hmac.compare_digest(expected.encode(), presented.encode())
