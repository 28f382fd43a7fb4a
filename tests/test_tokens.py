"""Callback tokens: unguessable, stable across restarts, recognisably hookd's."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hookd.subscriptions import tokens


def test_server_secret_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    first = tokens.load_or_create_server_secret(tmp_path / "state")
    second = tokens.load_or_create_server_secret(tmp_path / "state")
    assert first == second and len(first) == 32
    mode = stat.S_IMODE((tmp_path / "state" / tokens.SECRET_FILE).stat().st_mode)
    assert mode == 0o600


def test_damaged_secret_file_is_an_error_not_a_silent_new_secret(tmp_path: Path) -> None:
    (tmp_path / tokens.SECRET_FILE).write_bytes(b"short")
    with pytest.raises(ValueError, match="damaged"):
        tokens.load_or_create_server_secret(tmp_path)


def test_token_is_deterministic_url_safe_and_depends_on_secret_and_id() -> None:
    a, b = b"a" * 32, b"b" * 32
    t = tokens.callback_token(a, "ci-123")
    assert t == tokens.callback_token(a, "ci-123")
    assert t.startswith("hkd1_") and len(t) == 5 + 43
    assert all(c.isalnum() or c in "-_" for c in t[5:])
    assert t != tokens.callback_token(b, "ci-123")
    assert t != tokens.callback_token(a, "ci-124")


@pytest.mark.parametrize(
    "sub_id, token, ok",
    [
        ("ci-123", None, True),
        ("ci-124", None, False),  # a token is bound to its subscription
        ("ci-123", "hkd1_" + "A" * 43, False),
        ("ci-123", "", False),
        ("ci-123", "hkd1_é", False),
    ],
)
def test_verify_token(sub_id: str, token: str | None, ok: bool) -> None:
    secret = b"s" * 32
    good = tokens.callback_token(secret, "ci-123")
    assert tokens.verify_token(secret, sub_id, good if token is None else token) is ok


def test_signing_secret_differs_from_token() -> None:
    secret = b"s" * 32
    assert tokens.signing_secret(secret, "x") not in tokens.callback_token(secret, "x")


@pytest.mark.parametrize(
    "url, parsed",
    [
        ("https://h.example/hooks/ci-1/hkd1_abc", ("ci-1", "hkd1_abc")),
        ("https://h.example/hooks/ci-1/hkd1_abc/", ("ci-1", "hkd1_abc")),
        ("https://h.example/hooks/ci-1/other", None),
        ("https://other.example/hooks/ci-1/hkd1_abc", None),
        ("https://h.example/hooks/ci-1", None),
    ],
)
def test_parse_callback_url(url: str, parsed: tuple[str, str] | None) -> None:
    assert tokens.parse_callback_url("https://h.example/", url) == parsed


def test_callback_url_shape() -> None:
    assert tokens.callback_url("https://h.example/", "s1", "hkd1_x") == "https://h.example/hooks/s1/hkd1_x"
