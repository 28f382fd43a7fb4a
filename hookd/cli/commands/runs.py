"""`hookd runs`: the run history, read straight from the store hookd.yaml's ``store:``
names (the state directory's SQLite file, or the PostgreSQL database every replica
shares), so it works whether or not a daemon is running, from any replica, and while the
rest of the config is broken.

    hookd runs [DIR] [--config DIR] [--state-dir DIR] [--flow F] [--status S] [--limit N]
               [--format text|json]
    hookd runs show RUN [--config DIR] [--state-dir DIR] [--format text|json]

RUN may be a unique prefix of a run id. Exit codes: 0 success; 1 the run was not found;
2 usage or I/O error (no state yet, unreadable file, hookd.yaml's ``store:`` unusable,
the database not answering).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hookd.cli.commands._common import (
    EXIT_ERRORS,
    EXIT_OK,
    EXIT_USAGE,
    add_config_args,
    add_dir_or_subcommands,
    add_format_arg,
    add_state_arg,
    run_on,
    table_lines,
    utc_time,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from hookd.store.interface import Store

T = TypeVar("T")

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def add_location_args(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """``--config`` and ``--state-dir``: the store of `hookd runs` and `hookd replay`
    is found without validating the config (see `_common.unvalidated_store`)."""
    add_config_args(parser, positional=False, nested=nested,
                    help="config directory whose hookd.yaml names the store (store:, "
                    "state_dir; default: $HOOKD_CONFIG, else the current directory)")
    add_state_arg(parser, nested=nested)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "runs", help="list runs (history), or show one run with its steps",
        description="List runs newest first, or show one run's steps (status, duration, "
        "input, output, error). Reads the store directly; no daemon needed.",
    )
    add_location_args(parser)
    parser.add_argument("--flow", help="only runs of this flow")
    parser.add_argument("--status", choices=STATUSES, help="only runs with this status")
    parser.add_argument("--limit", type=int, default=50, help="at most N runs (default 50)")
    add_format_arg(parser)
    parser.set_defaults(func=run_list)
    sub = add_dir_or_subcommands(parser, dest="runs_command", metavar="DIR | show RUN")
    show = sub.add_parser("show", help="one run with its steps")
    show.add_argument("run", metavar="RUN", help="run id (or a unique prefix)")
    add_location_args(show, nested=True)
    add_format_arg(show, nested=True)
    show.set_defaults(func=run_show)


def with_store(args: argparse.Namespace,
               call: Callable[[Store], Coroutine[Any, Any, T]]) -> T | int:
    """`call(store)` on the store hookd.yaml's ``store:`` names (PostgreSQL, or the state
    directory's SQLite file), closed afterwards; an exit code, said on stderr, when there
    is none (2: hookd has not run there, hookd.yaml does not say), it cannot answer (2;
    for a database, with where ``store:`` is written) or it refuses (1)."""
    from hookd import store as stores
    from hookd.cli.commands._common import unvalidated_store
    from hookd.store.errors import NotFound, StoreError, Unavailable

    where = unvalidated_store(args, args.command)
    if where is None:
        return EXIT_USAGE
    try:
        store = stores.open(where, role="cli", mode="existing")
    except NotFound as exc:
        print(f"hookd {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run_on(store, call)
    except Unavailable as exc:
        hint = ""
        if not isinstance(where, Path) and where.pos is not None:
            hint = (f"; hint: is the database that store: ({where.pos}) names up and "
                    "reachable from this host?")
        print(f"hookd {args.command}: {exc}{hint}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"hookd {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERRORS


def run_list(args: argparse.Namespace) -> int:
    runs = with_store(args, lambda s: s.runs.list(flow=args.flow, status=args.status,
                                                  limit=args.limit))
    if isinstance(runs, int):
        return runs
    if args.format == "json":
        # The shape of the admin API's `GET /api/runs`.
        print(json.dumps({"runs": [r.to_json(steps=False) for r in runs]}, indent=2))
        return EXIT_OK
    if not runs:
        print("no runs")
        return EXIT_OK
    rows: list[tuple[str, ...]] = [("RUN", "FLOW", "STATUS", "ATTEMPT", "STARTED", "DURATION", "DELIVERY", "ERROR")]
    for r in runs:
        rows.append((r.id, r.flow, r.status, str(r.attempt), utc_time(r.started_at or r.created_at),
                     _duration(r.duration), r.delivery_id, _short(r.error or "", 60)))
    print("\n".join(table_lines(rows)))
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    run = with_store(args, lambda s: s.runs.get(args.run))
    if isinstance(run, int):
        return run
    if run is None:
        print(f"hookd runs show: no run {args.run!r}", file=sys.stderr)
        return EXIT_ERRORS
    if args.format == "json":
        print(json.dumps(run.to_json(), indent=2, default=str))
        return EXIT_OK
    print(f"run       {run.id}")
    print(f"flow      {run.flow}")
    print(f"status    {run.status}")
    print(f"attempt   {run.attempt}")
    print(f"delivery  {run.delivery_id}")
    print(f"started   {utc_time(run.started_at)}")
    print(f"duration  {_duration(run.duration)}")
    if run.error:
        print(f"error     {run.error}")
    print(f"steps     {len(run.steps)}")
    for s in run.steps:
        print()
        print(f"  [{s.index}] {s.step_id} ({s.kind})  {s.status}  {_duration(s.duration)}"
              f"  attempt {s.attempt}")
        print(f"      input:  {_short(_json(s.input), 2000)}")
        print(f"      output: {_short(_json(s.output), 2000)}")
        if s.error:
            print(f"      error:  {s.error}")
    return EXIT_OK


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.1f}s"


def _short(text: str, limit: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
