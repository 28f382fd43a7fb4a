"""Hot reload: noticing config changes, and applying or rejecting the new config.

Edits reach the config directory in messy ways: editors write a temporary file and
rename it over the original (vim also creates ``4913`` probes and ``.swp`` files), and
``git pull`` replaces many files in quick succession. hookd watches the whole directory
(watchfiles, recursive, so a rename-over or a new subdirectory is seen), keeps only the
events that can change what the loader reads, and lets watchfiles wait for a quiet period
before reporting a batch, so one pull is one reload.

The state directory may live inside the config directory (the default ``state_dir`` is
relative to it); SQLite writes there would otherwise trigger a reload per delivery.

`Reloader` runs one reload at a time — load, validate, then hand the new config to the
daemon or reject it as a whole — and remembers the outcome for ``/readyz``, ``hookd
status`` and the metrics. A rejected config changes nothing: the daemon keeps serving
the last good one and nothing is deleted because of a broken file.

>>> accept = ConfigFilter(Path("/etc/hookd"), exclude=[Path("/etc/hookd/state")])
>>> accept(Change.modified, "/etc/hookd/flows/deploy.yaml")
True
>>> accept(Change.modified, "/etc/hookd/state/hookd.db-wal")
False
>>> accept(Change.added, "/etc/hookd/flows/.deploy.yaml.swp")
False
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hookd.daemon import revision, sdnotify
from hookd.daemon.status import ReloadOutcome
from hookd.diagnostics import Diagnostic

if TYPE_CHECKING:
    from hookd.config.model import Config

log = logging.getLogger("hookd.daemon.reload")

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


def emptied_flow_files(running: Config, loaded: Config) -> list[Diagnostic]:
    """An error for each flow file that still exists but yields no flows while it gave
    the running config some.

    An editor that truncates before it writes, a botched merge or a file commented out
    would otherwise delete the flows' upstream hooks on the next reconcile; the intent
    to remove flows is expressed by removing their file (or setting ``enabled: false``),
    so an emptied file is rejected like a broken one and the running config stays.
    """
    kept = {f.pos.file for f in loaded.flows.values() if f.pos is not None}
    had: dict[Path, list[str]] = {}
    for flow in running.flows.values():
        if flow.pos is not None and flow.pos.file not in kept:
            had.setdefault(flow.pos.file, []).append(flow.name)
    return [
        Diagnostic(path, 1, 1, "error",
                   f"the file yields no flows; it had {', '.join(sorted(names))}",
                   hint="the reload is refused so that their upstream hooks stay; delete "
                        "the file to remove its flows, or set 'enabled: false' in them")
        for path, names in sorted(had.items()) if path.is_file()
    ]


class Target(Protocol):
    """What a `Reloader` acts on (the daemon)."""

    notifier: sdnotify.Notifier
    config: Config  # the running config

    async def apply_config(self, config: Config, revision: str, trigger: str) -> None: ...

    def config_rejected(self, outcome: ReloadOutcome) -> None: ...

    def summary(self) -> str: ...


Loader = Callable[[], tuple["Config | None", list[Diagnostic], str]]


class Reloader:
    """Load → validate → apply or reject, one at a time, remembering the last outcome.

    `load` returns (config or None when invalid, diagnostics, revision); `exclude` names
    the directories that are not config (the state directory). The outcome of the
    first load, done before the daemon started, is `initial`; `warned` are the warnings
    it logged (formatted), which an applied reload does not log again.
    """

    def __init__(
        self,
        directory: Path,
        load: Loader,
        target: Target,
        *,
        exclude: Callable[[], list[Path]],
        initial: ReloadOutcome,
        loaded_hash: str,
        warned: Iterable[str] = (),
    ) -> None:
        self.directory = Path(directory).absolute()
        self.load = load
        self.target = target
        self.exclude = exclude
        self.last = initial
        self.counts = {"applied": 1, "rejected": 0}
        # Content hash of the files behind the last load attempt: the revision may be a
        # git commit, which does not change while files are edited.
        self.loaded_hash = loaded_hash
        self.warned = set(warned)  # the warnings logged for the running config
        self._lock = asyncio.Lock()

    async def reload(self, trigger: str) -> bool | None:
        """True applied, False rejected, None nothing to do (a watch event that left the
        files as they were loaded; SIGHUP always reloads)."""
        async with self._lock:
            content = await asyncio.to_thread(
                revision.content_hash, self.directory, self.exclude())
            if trigger == "watch" and content == self.loaded_hash:
                return None
            self.loaded_hash = content
            self.target.notifier.reloading()
            try:
                config, diagnostics, rev = await asyncio.to_thread(self.load)
            except Exception as exc:  # a loader bug must not take the daemon down
                log.exception("config reload crashed; keeping the running config")
                config, rev = None, self.last.revision
                diagnostics = [Diagnostic(self.directory, 0, 0, "error",
                                          f"internal error while loading: {exc!r}")]
            if config is not None:
                emptied = emptied_flow_files(self.target.config, config)
                if emptied:
                    config, diagnostics = None, [*diagnostics, *emptied]
            now = time.time()
            if config is None:
                errors = tuple(d.format(relative_to=self.directory)
                               for d in diagnostics if d.is_error)
                self.last = ReloadOutcome(now, trigger, False, rev, errors)
                self.counts["rejected"] += 1
                for line in errors:
                    log.error("config rejected: %s", line, extra={"revision": rev})
                log.error("config rejected; the last good config keeps running",
                          extra={"trigger": trigger, "rejected_revision": rev,
                                 "errors": len(errors)})
                self.target.config_rejected(self.last)
            else:
                self.last = ReloadOutcome(now, trigger, True, rev)
                self.counts["applied"] += 1
                await self.target.apply_config(config, rev, trigger)
                # Each warning once while it lasts, not again on every reload.
                warnings = {d.format(relative_to=self.directory) for d in diagnostics}
                for line in sorted(warnings - self.warned):
                    log.warning("config warning: %s", line)
                self.warned = warnings
                log.info("config applied",
                         extra={"trigger": trigger, "revision": rev, "flows": len(config.flows)})
            self.target.notifier.ready(self.target.summary())
            return config is not None

    async def watch(self, on_change: Callable[[], None]) -> None:
        """Reload on every batch of relevant file changes; `on_change` is called after
        each applied config (the daemon starts a reconcile)."""
        import watchfiles

        accept = ConfigFilter(self.directory, self.exclude())
        # Changes made between the first load and the watcher's start would go unseen.
        catch_up = asyncio.create_task(self._catch_up(on_change))
        try:
            async for changes in watchfiles.awatch(
                self.directory, watch_filter=accept, step=STEP_MS, debounce=DEBOUNCE_MS,
                recursive=True, ignore_permission_denied=True,
            ):
                log.info("config files changed",
                         extra={"files": changed_paths(changes, self.directory)})
                if await self.reload("watch"):
                    on_change()
        finally:
            catch_up.cancel()

    async def _catch_up(self, on_change: Callable[[], None]) -> None:
        await asyncio.sleep(STEP_MS / 1000 * 2)
        if await self.reload("watch"):
            on_change()
