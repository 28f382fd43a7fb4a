"""Loading the config for the daemon: validate it, apply `hookd run`'s overrides, compute
its revision (git or a content hash: the daemon's job, not the loader's), and mask every
secret it references in the logs."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hookd.daemon import revision
from hookd.diagnostics import Diagnostic, has_errors
from hookd.telemetry import logs

if TYPE_CHECKING:
    from hookd.config.model import Config, Listener


def load(
    directory: Path, state_dir: Path | None = None, *, public: Listener | None = None,
    admin: Listener | None = None,
) -> tuple[Config | None, list[Diagnostic], str]:
    """Load and validate: the config (None when invalid), all diagnostics, the revision.

    `state_dir`, `public` and `admin` are `hookd run`'s overrides of hookd.yaml.
    """
    from hookd.config.loader import load_config

    config, diagnostics = load_config(directory)
    if has_errors(diagnostics):
        config = None
    if config is not None:
        settings = config.settings
        if state_dir is not None:
            settings = dataclasses.replace(settings, state_dir=Path(state_dir).absolute())
        if public is not None:
            settings = dataclasses.replace(settings, public=public)
        if admin is not None:
            settings = dataclasses.replace(settings, admin=admin)
        config = dataclasses.replace(config, settings=settings)
    exclude = [Path(directory) / "state", *([state_dir] if state_dir else [])]
    if config is not None:
        exclude.append(config.settings.state_dir)
    rev = revision.config_revision(Path(directory), exclude)
    if config is not None:
        config = dataclasses.replace(config, revision=rev)
    return config, diagnostics, rev


def format_report(diagnostics: list[Diagnostic], directory: Path) -> list[str]:
    """The lines `hookd check` prints: every problem (the loader sorts them), then a count."""
    base = Path(directory).absolute()
    lines = [d.format(relative_to=base) for d in diagnostics]
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    summary = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    lines.append(f"{directory}: {'ok' if not errors else 'failed'} ({summary})")
    return lines


def register_secrets(config: Config) -> None:
    """Mask every secret the config references in all log lines (see `hookd.telemetry.logs`)."""
    from hookd.config import secrets
    from hookd.config.model import SecretRef

    values: list[Any] = [p for c in config.connections.values() for p in c.parameters.values()]
    values += [f.verify_secret for f in config.flows.values() if f.verify_secret is not None]
    for value in values:
        if isinstance(value, SecretRef):
            with contextlib.suppress(Exception):  # unresolvable: reported by the loader
                logs.register_secret(secrets.resolve_value(value, base_dir=config.directory))
