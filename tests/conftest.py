"""Shared pytest fixtures: where the repo and the optional ../shared material are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def shared_dir() -> Path:
    """../shared (connector corpus, GitHub fixtures); skips the test when absent."""
    if not (SHARED / "corpus").is_dir():
        pytest.skip("../shared is not present (corpus and fixtures live outside the repo)")
    return SHARED


@pytest.fixture
def repo_dir() -> Path:
    return REPO
