"""`hookd.store.tokens.FileTokenStore`: owner-only files, and a write that fails halfway
leaves the previous tokens in place (no torn file, no temporary left behind)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hookd.oauth.tokens import TokenSet
from hookd.store.tokens import FileTokenStore


def test_tokens_round_trip_in_owner_only_files(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path)
    assert store.get("api") is None
    tokens = TokenSet("at-1", "rt-1", expires_at=100.0, scope="read", obtained_at=40.0)
    store.put("api", tokens)
    assert store.get("api") == tokens
    assert stat.S_IMODE((tmp_path / "oauth").stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path("api").stat().st_mode) == 0o600
    assert "at-1" not in repr(tokens) and "rt-1" not in repr(tokens)
    store.delete("api")
    store.delete("api")  # twice is fine
    assert store.get("api") is None


def test_a_failed_write_keeps_the_old_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileTokenStore(tmp_path)
    old = TokenSet("at-old", "rt-old", expires_at=100.0)
    store.put("api", old)

    def torn(self: TokenSet) -> dict[str, object]:
        raise OSError("disk full")

    monkeypatch.setattr(TokenSet, "to_json", torn)
    with pytest.raises(OSError, match="disk full"):
        store.put("api", TokenSet("at-new", "rt-new"))
    monkeypatch.undo()
    assert store.get("api") == old
    assert sorted(p.name for p in (tmp_path / "oauth").iterdir()) == ["api.json"]


def test_an_unreadable_token_file_names_the_fix_and_not_its_content(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path)
    store.put("api", TokenSet("at-1", "rt-1"))
    store.path("api").write_text('{"access_token": "at-1", broken')
    with pytest.raises(OSError) as failure:
        store.get("api")
    assert "hookd connect api" in str(failure.value) and "at-1" not in str(failure.value)


def test_connection_names_cannot_escape_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        FileTokenStore(tmp_path).path("../escape")
