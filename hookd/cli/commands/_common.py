"""What every `hookd` command does the same way: find the config directory, load it and
report its problems, find and open the state store, and format what it prints.

The commands were written in parallel and each had grown its own variant (a positional
DIR here, ``--config`` there, errors printed relative to different bases). A user expects
``hookd plan DIR``, ``hookd runs --config DIR`` and ``$HOOKD_CONFIG`` to mean the same
directory everywhere, and the same error text for the same broken file, so the rules
live here once:

- the config directory is DIR (where the command takes one), else ``--config``/``-c``,
  else ``$HOOKD_CONFIG``, else the current directory; DIR and ``--config`` together must
  name the same directory;
- ``--state-dir`` (alias ``--state``) overrides ``state_dir`` from hookd.yaml;
- ``--format text|json``; JSON documents go to stdout, problems to stderr.

This module is imported to build the parser on every invocation, so it imports only
the standard library's light modules at top; the rest is imported where it is used.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from hookd.config.model import Config, Listener, Settings
    from hookd.config.yamlpos import Document
    from hookd.store.interface import Store

T = TypeVar("T")

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_CHANGES = 0, 1, 2, 3
CONFIG_HELP = "config directory (default: $HOOKD_CONFIG, else the current directory)"
STATE_HELP = "state directory, overriding state_dir in hookd.yaml"


class UsageError(Exception):
    """A command line that cannot mean anything; `hookd.cli.main` prints it and exits 2."""


# ------------------------------------------------------------------------- arguments


def add_config_args(parser: argparse._ActionsContainer, *, positional: bool = True,
                    nested: bool = False, help: str = CONFIG_HELP) -> None:
    """DIR (when `positional`) and ``--config``/``-c DIR``. In a sub-subcommand
    (`nested`) the default is suppressed, so that ``hookd runs --config D show X`` keeps
    the D given before the subcommand."""
    if positional:
        parser.add_argument("directory", nargs="?", metavar="DIR", help=help)
    parser.add_argument("--config", "-c", type=Path, metavar="DIR",
                        default=argparse.SUPPRESS if nested else None,
                        help="the same as DIR" if positional else help)


if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    _SubParsers = argparse._SubParsersAction


class _AnyWord(dict[str, argparse.ArgumentParser]):
    """`choices` that admit any word (it may be DIR; `__call__` tells them apart)."""

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)


class _DirOrSubcommand(_SubParsers):
    """Subcommands that also accept DIR in their place: ``hookd runs DIR`` and ``hookd
    runs show RUN`` (argparse cannot put an optional DIR before optional subcommands:
    it would hand DIR to the subparser as an unknown choice)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # argparse checks the first word against `choices` before calling the action.
        self.choices = _AnyWord()

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        words = [values] if isinstance(values, str) else list(values or [])
        if words and words[0] not in self._name_parser_map:
            namespace.directory = words[0]
            if len(words) > 1:  # argparse hands everything after DIR to this action
                _, extra = parser.parse_known_args(words[1:], namespace)
                if extra or namespace.directory != words[0]:
                    parser.error(f"unrecognized arguments: {' '.join(map(str, words[1:]))}")
            return
        super().__call__(parser, namespace, values, option_string)


def add_dir_or_subcommands(parser: argparse.ArgumentParser, *, dest: str,
                           metavar: str) -> _SubParsers:
    """DIR or a subcommand (see `_DirOrSubcommand`); ``--config`` is the caller's."""
    parser.set_defaults(directory=None)
    parser.register("action", "dir_or_subcommand", _DirOrSubcommand)
    return parser.add_subparsers(dest=dest, metavar=metavar, action="dir_or_subcommand")


def add_state_arg(parser: argparse._ActionsContainer, *, nested: bool = False,
                  help: str = STATE_HELP) -> None:
    parser.add_argument("--state-dir", "--state", dest="state_dir", type=Path, metavar="DIR",
                        default=argparse.SUPPRESS if nested else None, help=help)


def listener_arg(text: str) -> Listener:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as a listener, for argparse's ``type=``.

    >>> listener_arg("127.0.0.1:9080")
    Listener(host='127.0.0.1', port=9080)
    >>> listener_arg("[::1]:0")
    Listener(host='::1', port=0)
    """
    from hookd.config.model import Listener

    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080; port 0 = any free port)")
    return Listener(host, int(port))


def add_format_arg(parser: argparse._ActionsContainer, *, nested: bool = False) -> None:
    parser.add_argument("--format", choices=("text", "json"),
                        default=argparse.SUPPRESS if nested else "text",
                        help="output format (default text)")


def given_config_dir(args: argparse.Namespace) -> Path | None:
    """DIR or ``--config`` as given on the command line, None when neither was."""
    positional = getattr(args, "directory", None)
    option = getattr(args, "config", None)
    if positional is not None and option is not None and Path(positional) != Path(option):
        raise UsageError(f"DIR {positional} and --config {option} name different "
                         "directories; give one")
    chosen = positional if positional is not None else option
    return None if chosen is None else Path(chosen)


def config_dir(args: argparse.Namespace) -> Path:
    """The config directory the command works on (see the module docstring)."""
    return given_config_dir(args) or Path(os.environ.get("HOOKD_CONFIG") or ".")


# ---------------------------------------------------------------------------- config


def load_valid_config(args: argparse.Namespace, command: str, *, resolve_secrets: bool = True,
                      consequence: str = "nothing was planned or changed") -> Config | None:
    """The loaded config with ``--state-dir`` applied, or None after printing every error
    (as `hookd check` prints them, relative to the config directory) and a last line
    saying what the command did not do."""
    import dataclasses

    from hookd.config.loader import load_config

    directory = config_dir(args)
    if not directory.is_dir():  # a usage error (exit 2), as for `hookd check` and `run`
        raise UsageError(f"{directory}: config directory does not exist"
                         if not directory.exists() else f"{directory}: not a directory")
    config, diagnostics = load_config(directory, resolve_secrets=resolve_secrets)
    if config is None:
        base = directory.absolute()
        for d in diagnostics:
            if d.is_error:
                print(d.format(relative_to=base), file=sys.stderr)
        print(f"hookd {command}: {directory}: invalid config; {consequence}", file=sys.stderr)
        return None
    state_dir = getattr(args, "state_dir", None)
    if state_dir is not None:
        settings = dataclasses.replace(config.settings, state_dir=state_dir.absolute())
        config = dataclasses.replace(config, settings=settings)
    return config


def local_url(listener: Listener) -> str:
    """The base URL that reaches `listener` from this machine (a wildcard bind address
    is reached on loopback)."""
    host = listener.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{listener.port}"


# ----------------------------------------------------------------------------- state


def unvalidated_state_dir(args: argparse.Namespace) -> Path:
    """The state directory for commands that must work while the config is broken
    (`hookd runs`, `hookd replay`): ``--state-dir``, else what `hookd.config.loader` computes
    from hookd.yaml's ``state_dir`` alone, without validating the rest."""
    from hookd.config.loader import state_dir_setting

    state_dir = getattr(args, "state_dir", None)
    if state_dir:
        return Path(state_dir)
    root = config_dir(args)
    state = (_raw_settings(root) or {}).get("state_dir")
    return state_dir_setting(state or None, root, os.environ).absolute()


def unvalidated_store(args: argparse.Namespace, command: str) -> Settings | Path | None:
    """The store of commands that must work while the config is broken (`hookd runs`,
    `hookd replay`, `hookd subscriptions forget`), from hookd.yaml's ``store:`` alone:
    its settings under ``store: postgresql://…`` (or a secret reference to one; the
    settings' `pos` is where ``store:`` is written, for error messages), else the SQLite
    state directory (`unvalidated_state_dir`). None after printing, as `hookd check`
    would, why hookd.yaml says nothing usable (it does not parse, ``store:`` is not a
    store, its secret cannot be resolved).

    Reading only ``store:`` (and ``state_dir``) keeps the run history reachable from any
    replica while a flow file or a connection is broken."""
    from hookd.config.loader import store_setting
    from hookd.config.model import Pos, Settings

    root = config_dir(args)
    doc = _store_document(root, command)
    if doc is False:
        return None
    raw = doc.data.get("store") if doc is not None else None
    setting = store_setting(raw, root.absolute())
    state_dir = unvalidated_state_dir(args)
    if setting.kind == "sqlite" or doc is None:
        return state_dir
    from hookd.config.secrets import SecretError
    from hookd.store.postgres.store import resolve_url

    line, col = doc.pos(("store",))
    assert setting.url is not None
    try:
        resolve_url(setting.url)  # the store resolves it again: here the error has a place
    except (SecretError, ValueError) as exc:
        print(doc.diagnostic(("store",), str(exc), hint="provide the secret on this host, or "
                             "name the database in store: (docs/scale-out.md)")
              .format(relative_to=root.absolute()), file=sys.stderr)
        print(f"hookd {command}: cannot open the store hookd.yaml names", file=sys.stderr)
        return None
    return Settings(public_url="", state_dir=state_dir, store=setting,
                    pos=Pos(doc.file, line, col))


def _store_document(root: Path, command: str) -> Document | None | Literal[False]:
    """hookd.yaml parsed with positions (None when absent), or False after printing its
    syntax errors or what is wrong with its ``store:`` (the schema's own words)."""
    from hookd.config import schema, yamlpos

    path = root / "hookd.yaml"
    if not path.is_file():
        return None
    try:
        doc, problems = yamlpos.load(path)
    except OSError as exc:
        print(f"hookd {command}: {path}: cannot read: {exc.strerror}", file=sys.stderr)
        return False
    if doc is not None and not isinstance(doc.data, dict):
        problems = [doc.diagnostic((), "hookd.yaml is not a mapping of settings",
                                   hint="start from public_url: https://…")]
    elif doc is not None and "store" in doc.data:
        problems = [d for d in schema.validate("hookd", doc.data, doc)
                    if d.key == "store" or d.key.startswith("store.")]
    errors = [d for d in problems if d.is_error]
    if doc is not None and not errors:
        return doc
    base = root.absolute()
    for d in errors:
        print(d.format(relative_to=base), file=sys.stderr)
    print(f"hookd {command}: {path}: cannot tell which store to open", file=sys.stderr)
    return False


def unvalidated_admin_listener(args: argparse.Namespace) -> Listener | str:
    """``listen.admin`` from hookd.yaml alone (the default when the file or the key is
    absent), for `hookd status`, which is needed most when the config is broken; else
    why it cannot be known."""
    from hookd.config.model import Listener, Settings

    root = config_dir(args)
    if not root.is_dir():
        raise UsageError(f"{root}: config directory does not exist"
                         if not root.exists() else f"{root}: not a directory")
    settings = _raw_settings(root)
    if settings is None:
        return f"{root / 'hookd.yaml'} cannot be read as YAML"
    default = Settings(public_url="").admin
    listen = settings.get("listen")
    admin = listen.get("admin") if isinstance(listen, dict) else None
    admin = admin if isinstance(admin, dict) else {}
    host, port = admin.get("host", default.host), admin.get("port", default.port)
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
        return f"listen.admin in {root / 'hookd.yaml'} is not a host and port"
    return Listener(host, port)


def unvalidated_setting(args: argparse.Namespace, *keys: str) -> object:
    """One value of hookd.yaml by its key path, read without validating the rest (None
    when absent or unreadable): `hookd status` finds the admin token this way."""
    value: object = _raw_settings(config_dir(args)) or {}
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _raw_settings(root: Path) -> dict[str, object] | None:
    """hookd.yaml as plain data without validation: {} when absent, None when it does
    not parse (or is not a mapping)."""
    path = root / "hookd.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def open_existing_store(where: Settings | Path, *, readonly: bool = False) -> Store | None:
    """The store `where` names (a valid config's settings: its ``store:``; a bare state
    directory: the SQLite file there), or None when hookd has not created one there (close
    it after use).

    `readonly` opens it without migrating it (`hookd send` next to a running daemon must
    not write to its store)."""
    from hookd import store as stores
    from hookd.store import errors

    try:
        return stores.open(where, role="cli", mode="readonly" if readonly else "existing")
    except errors.NotFound:
        return None


def run_on(store: Store, call: Callable[[Store], Coroutine[Any, Any, T]]) -> T:
    """`call(store)` on the started store, in one event loop (a server backend's pool
    belongs to one); the store is closed afterwards, whatever happened."""
    import asyncio

    async def go() -> T:
        try:
            await store.start()
            return await call(store)
        finally:
            await store.aclose()

    return asyncio.run(go())


def server_secret_for(settings: Settings, *, create: bool) -> bytes | None:
    """The server secret the daemon derives callback tokens from: the store's under
    ``store: postgresql`` (one row, shared by every replica), else the state directory's
    file. None when hookd has made none yet and `create` is False (no callback URL can be
    ours then). A command that read the state directory's file under PostgreSQL would mint
    other tokens than the replicas, and `apply` would replace every hook."""
    from hookd import store as stores
    from hookd.subscriptions import tokens

    if settings.store.kind == "postgresql":
        return run_on(stores.open(settings, role="cli"), lambda s: s.server_secret())
    if create:
        return tokens.load_or_create_server_secret(Path(settings.state_dir))
    return existing_server_secret(Path(settings.state_dir))


def existing_server_secret(state_dir: Path) -> bytes | None:
    """The server secret, or None when hookd has not created one (no callback URL can
    be ours then). Raises ValueError when the file is damaged."""
    from hookd.subscriptions import tokens

    if not (state_dir / tokens.SECRET_FILE).exists():
        return None
    return tokens.load_or_create_server_secret(state_dir)


# ---------------------------------------------------------------------------- output


def utc_time(ts: float | None) -> str:
    """A timestamp as ``2026-01-31 12:00:00Z``; ``-`` for none."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def table_lines(rows: Sequence[Sequence[str]]) -> list[str]:
    """`rows` (a header first) as left-aligned columns two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]
