"""Where a connection's OAuth tokens are kept: `TokenStore`, and its file implementation.

Tokens are state, not config: ``hookd connect`` writes them, the daemon refreshes them,
and a rotated refresh token must replace the old one without a window in which neither is
on disk. `FileTokenStore` keeps one JSON file per connection in ``STATE/oauth/``
(directory 0700, files 0600), each written to a temporary file, fsynced and renamed over
the old one (then the directory fsynced): a crash leaves the old set or the new one,
never half of either. The `TokenStore` protocol is all the rest of hookd uses;
`open_tokens(settings)` picks the store's: with PostgreSQL the database's table
(`hookd.store.postgres.tokens`), so every replica sees the tokens `hookd connect` stored.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hookd.oauth.tokens import TokenSet

if TYPE_CHECKING:
    from hookd.config.model import Settings

DIRECTORY = "oauth"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # connection names (the schema's pattern)


class TokenStore(Protocol):
    """The tokens of connections, by connection name."""

    def get(self, connection: str) -> TokenSet | None:
        """The stored tokens, or None when the connection has none."""
        ...

    def put(self, connection: str, tokens: TokenSet) -> None:
        """Replace the connection's tokens atomically (all or nothing, durable on return)."""
        ...

    def delete(self, connection: str) -> None:
        """Forget the connection's tokens (no error when there are none)."""
        ...


def open_tokens(where: Settings | Path) -> TokenStore:
    """The token store of hookd.yaml's store: the database's table with PostgreSQL (every
    replica sees what `hookd connect` stored), else files in the state directory (a bare
    path is a state directory)."""
    if isinstance(where, Path):
        return FileTokenStore(where)
    if where.store.kind == "postgresql" and where.store.url is not None:
        from hookd.store.postgres.store import resolve_url
        from hookd.store.postgres.tokens import PgTokenStore

        return PgTokenStore(resolve_url(where.store.url))
    return FileTokenStore(where.state_dir)


class FileTokenStore:
    """`TokenStore` in ``STATE_DIR/oauth/<connection>.json`` (see module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = Path(state_dir) / DIRECTORY

    def path(self, connection: str) -> Path:
        if not _SAFE.match(connection):
            raise ValueError(f"not a connection name: {connection!r}")
        return self.directory / f"{connection}.json"

    def get(self, connection: str) -> TokenSet | None:
        try:
            data = json.loads(self.path(connection).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            # Never quote the content: it holds tokens.
            raise OSError(f"{self.path(connection)}: unreadable token file "
                          f"({type(exc).__name__}); run hookd connect {connection}") from None
        return TokenSet.from_json(data) if isinstance(data, dict) else None

    def put(self, connection: str, tokens: TokenSet) -> None:
        target = self.path(connection)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{connection}.", suffix=".tmp", dir=self.directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(tokens.to_json(), out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.directory)

    def delete(self, connection: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(connection).unlink()
            _fsync_dir(self.directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
