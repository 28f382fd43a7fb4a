"""Which version of the config is running: the answer to "did my change get picked up?".

Operators keep the config directory in git, so the natural name of a version is the
commit, with ``-dirty`` when the files differ from it (someone edited on the server).
Where the directory is not a git checkout (or git is missing), a hash of the files'
names and contents stands in: it still changes exactly when the config changes.

Shown by ``hookd status``, ``/readyz``, the logs of every reload and a metric label.

>>> content_hash(Path("/nonexistent"))
'sha256:e3b0c44298fc'
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

# Only what the loader reads can change the running config.
_SUFFIXES = frozenset({".yaml", ".yml", ".json"})
_SKIP_DIRS = frozenset({".git", "__pycache__", "node_modules"})


def config_files(directory: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    """The files under ``directory`` that can affect the config, sorted; ``exclude``
    names directories to leave out (the state directory when it lives inside)."""
    skip = {p.resolve() for p in exclude}
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        here = Path(root)
        dirs[:] = sorted(
            d for d in dirs
            if d not in _SKIP_DIRS and not d.startswith(".") and (here / d).resolve() not in skip
        )
        found.extend(here / f for f in files if Path(f).suffix in _SUFFIXES)
    return sorted(found)


def content_hash(directory: Path, exclude: Iterable[Path] = ()) -> str:
    """``sha256:`` and 12 hex digits over the relative names and contents of the files."""
    digest = hashlib.sha256()
    for path in config_files(directory, exclude):
        try:
            data = path.read_bytes()
        except OSError:
            continue  # vanished while walking: the next reload sees the new state
        name = path.relative_to(directory).as_posix().encode()
        digest.update(len(name).to_bytes(4, "big") + name)
        digest.update(len(data).to_bytes(8, "big") + data)
    return "sha256:" + digest.hexdigest()[:12]


def _git(directory: Path, *args: str) -> str | None:
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C")  # never take the index lock
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True, text=True, timeout=5, env=env, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_revision(directory: Path, exclude: Iterable[Path] = ()) -> str | None:
    """The HEAD commit (12 hex digits, ``-dirty`` when files under ``directory`` differ
    from it), or None when the directory is not in a git work tree."""
    commit = _git(directory, "rev-parse", "--verify", "--quiet", "HEAD")
    if not commit:
        return None
    pathspec = ["--", "."]
    for path in exclude:
        try:
            rel = Path(path).resolve().relative_to(Path(directory).resolve())
        except ValueError:
            continue  # outside the directory: git status never sees it
        pathspec.append(f":(exclude){rel.as_posix()}")
    changes = _git(directory, "status", "--porcelain", "--untracked-files=normal", *pathspec)
    short = commit[:12]
    return f"{short}-dirty" if changes else short


def config_revision(directory: Path, exclude: Iterable[Path] = ()) -> str:
    """The git revision of the config directory, else its content hash."""
    exclude = list(exclude)
    return git_revision(directory, exclude) or content_hash(directory, exclude)
