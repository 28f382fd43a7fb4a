"""Noticing config changes: which file events mean "reload", and coalescing them.

Edits reach the config directory in messy ways: editors write a temporary file and
rename it over the original (vim also creates ``4913`` probes and ``.swp`` files), and
``git pull`` replaces many files in quick succession. hookd watches the whole directory
(watchfiles, recursive, so a rename-over or a new subdirectory is seen), keeps only the
events that can change what the loader reads, and lets watchfiles wait for a quiet period
before reporting a batch, so one pull is one reload.

The state directory may live inside the config directory (the default ``state_dir`` is
relative to it); SQLite writes there would otherwise trigger a reload per delivery.

Decisions only; the daemon owns the loop that acts on them.

>>> accept = ConfigFilter(Path("/etc/hookd"), exclude=[Path("/etc/hookd/state")])
>>> accept(Change.modified, "/etc/hookd/flows/deploy.yaml")
True
>>> accept(Change.modified, "/etc/hookd/state/hookd.db-wal")
False
>>> accept(Change.added, "/etc/hookd/flows/.deploy.yaml.swp")
False
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from pathlib import Path

CONFIG_SUFFIXES = frozenset({".yaml", ".yml", ".json"})
# Quiet period (ms) before a batch of changes is reported, and the longest a batch waits.
STEP_MS = 300
DEBOUNCE_MS = 2000


class Change(enum.IntEnum):
    """Mirrors `watchfiles.Change` (same values) so this module needs no import of it."""

    added = 1
    modified = 2
    deleted = 3


class ConfigFilter:
    """A `watchfiles` filter: True for events that may change the loaded config."""

    def __init__(self, directory: Path, exclude: Iterable[Path] = ()) -> None:
        # absolute(), not resolve(): watchfiles reports paths under the path it was given.
        self.directory = Path(directory).absolute()
        self.exclude = tuple(Path(p).absolute() for p in exclude)

    def __call__(self, change: int, path: str) -> bool:
        p = Path(path)
        try:
            rel = p.relative_to(self.directory)
        except ValueError:
            rel = p
        if any(part.startswith(".") for part in rel.parts):
            return False  # .git, editor swap and lock files, hidden dirs
        if any(p == ex or ex in p.parents for ex in self.exclude):
            return False
        if p.suffix in CONFIG_SUFFIXES:
            return True
        # A directory removed or renamed (e.g. `git checkout` of another branch) carries
        # no suffix; its files may not get their own events. Temp files (``4913``,
        # ``a.yaml~``) have no config suffix either, but they are not directories: a
        # deletion of a suffix-less path is the only ambiguous case, so reload then.
        return int(change) == Change.deleted and not p.name.endswith("~") and "." not in p.name


def changed_paths(changes: Iterable[tuple[int, str]], directory: Path) -> list[str]:
    """Relative paths of a batch, sorted, for the reload log line.

    >>> changed_paths({(2, "/c/flows/b.yaml"), (1, "/c/flows/a.yaml")}, Path("/c"))
    ['flows/a.yaml', 'flows/b.yaml']
    """
    out = set()
    for _, path in changes:
        try:
            out.add(Path(path).relative_to(directory).as_posix())
        except ValueError:
            out.add(path)
    return sorted(out)
