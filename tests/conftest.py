"""Shared pytest fixtures: where the repo and the optional ../shared material are, and the
PostgreSQL server of the store tests (`tests/pgserver.py`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pgserver

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


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI=true, no usable PostgreSQL fails the run: the store's PostgreSQL tests
    must run there, not skip."""
    if os.environ.get("CI", "").lower() == "true":
        problem = pgserver.server_problem(os.environ)
        if problem is not None:
            pytest.exit(f"CI=true but PostgreSQL is not usable: {problem}", returncode=1)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the test PostgreSQL server; skips the test when there is none."""
    problem = pgserver.server_problem(os.environ)
    if problem is not None:
        pytest.skip(f"no PostgreSQL: {problem}")
    return os.environ[pgserver.ENV]


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database for one test (dropped after it)."""
    url = pgserver.create_database(postgres_server)
    try:
        yield url
    finally:
        pgserver.drop_database(postgres_server, url)
