"""The `hookd` command line: parse arguments, call one command, map to an exit code.

Each command lives in `hookd.cli.commands.<name>` and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` to a
``(argparse.Namespace) -> int`` callable. Commands import heavy modules inside ``func``
so that ``hookd --help`` and ``hookd check`` start fast (``tests/test_cli.py`` checks,
``bench/bench_cli.py`` measures). What the commands share — the config directory from
DIR / ``--config`` / ``$HOOKD_CONFIG``, ``--state-dir``, ``--format``, loading and
reporting a config, opening the store — is in `hookd.cli.commands._common`.

Exit codes shared by all commands: 0 success, 1 the command found errors, 2 usage or
I/O error; `hookd plan` adds 3 (changes pending).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hookd import __version__
from hookd.cli.commands._common import EXIT_CHANGES, EXIT_ERRORS, EXIT_OK, EXIT_USAGE, UsageError

# Order is the order shown in `hookd --help`.
COMMANDS = (
    "run",
    "check",
    "plan",
    "apply",
    "connectors",
    "connect",
    "subscriptions",
    "send",
    "runs",
    "replay",
    "status",
    "teardown",
    "migrate",
    "store",
)

__all__ = ["COMMANDS", "EXIT_CHANGES", "EXIT_ERRORS", "EXIT_OK", "EXIT_USAGE", "build_parser",
           "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookd",
        description="Self-hosted GitOps webhook daemon (Power Automate connector triggers).",
    )
    parser.add_argument("--version", action="version", version=f"hookd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hookd.cli.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hookd.cli.commands.{name}":
                raise
            continue  # command not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except UsageError as exc:
        print(f"hookd {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"hookd {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
