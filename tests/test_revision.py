"""Config revision: the git commit (+ -dirty) of a checkout, else a content hash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hookd.daemon import revision


def make_config(directory: Path) -> Path:
    (directory / "flows").mkdir(parents=True)
    (directory / "hookd.yaml").write_text("public_url: https://hooks.example.net\n")
    (directory / "flows" / "a.yaml").write_text("name: a\n")
    return directory


def git(directory: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(directory), "-c", "user.name=t", "-c", "user.email=t@example.net",
         "-c", "commit.gpgsign=false", *args],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def test_content_hash_changes_exactly_when_the_config_changes(tmp_path: Path) -> None:
    config = make_config(tmp_path / "c")
    first = revision.config_revision(config)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 12
    assert revision.config_revision(config) == first
    (config / "notes.txt").write_text("not config")
    assert revision.config_revision(config) == first
    (config / "flows" / "a.yaml").write_text("name: b\n")
    assert revision.config_revision(config) != first


def test_renaming_a_file_changes_the_hash(tmp_path: Path) -> None:
    config = make_config(tmp_path / "c")
    first = revision.content_hash(config)
    (config / "flows" / "a.yaml").rename(config / "flows" / "b.yaml")
    assert revision.content_hash(config) != first


def test_state_dir_inside_the_config_is_ignored(tmp_path: Path) -> None:
    config = make_config(tmp_path / "c")
    state = config / "state"
    first = revision.content_hash(config, exclude=[state])
    state.mkdir()
    (state / "runs.json").write_text("{}")
    assert revision.content_hash(config, exclude=[state]) == first


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_checkout_gives_the_commit_and_dirty(tmp_path: Path) -> None:
    config = make_config(tmp_path / "repo")
    git(config, "init", "-q")
    git(config, "add", ".")
    git(config, "commit", "-q", "-m", "first")
    head = git(config, "rev-parse", "HEAD")
    assert revision.config_revision(config) == head[:12]

    state = config / "state"
    state.mkdir()
    (state / "hookd.db").write_text("x")
    assert revision.config_revision(config, exclude=[state]) == head[:12]

    (config / "flows" / "a.yaml").write_text("name: changed\n")
    assert revision.config_revision(config, exclude=[state]) == head[:12] + "-dirty"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_config_in_a_subdirectory_of_a_repo(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    config = make_config(repo / "hookd")
    (repo / "other.txt").write_text("x")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "other.txt").write_text("changed outside the config")
    assert revision.config_revision(config) == git(repo, "rev-parse", "HEAD")[:12]
