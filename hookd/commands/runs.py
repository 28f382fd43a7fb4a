"""`hookd runs`: the run history, read straight from the state directory's SQLite file,
so it works whether or not the daemon is running (and on a copy of the state).

    hookd runs [--flow F] [--status S] [--limit N] [--format text|json]
    hookd runs show RUN [--format text|json]

RUN may be a unique prefix of a run id. Exit codes: 0 success; 1 the run was not found;
2 usage or I/O error (no state yet, unreadable file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def add_location_args(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    # In a sub-subcommand the defaults are suppressed, so that `hookd runs --config D show
    # X` keeps the D given before the subcommand.
    parser.add_argument(
        "--config", "-c", type=Path, metavar="DIR",
        default=argparse.SUPPRESS if nested else Path(os.environ.get("HOOKD_CONFIG") or "."),
        help="config directory whose state_dir holds the store (default: $HOOKD_CONFIG, else .)",
    )
    parser.add_argument("--state", type=Path, metavar="DIR",
                        default=argparse.SUPPRESS if nested else None,
                        help="state directory (overrides the config's state_dir)")


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
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=run_list)
    sub = parser.add_subparsers(dest="runs_command", metavar="SUBCOMMAND")
    show = sub.add_parser("show", help="one run with its steps")
    show.add_argument("run", metavar="RUN", help="run id (or a unique prefix)")
    add_location_args(show, nested=True)
    show.add_argument("--format", choices=("text", "json"), default=argparse.SUPPRESS)
    show.set_defaults(func=run_show)


def state_dir(args: argparse.Namespace) -> Path:
    """The state directory as `hookd.config` would compute it, without requiring the rest
    of the config to be valid: ``state_dir`` in hookd.yaml (relative to the config
    directory), else ``$STATE_DIRECTORY``, else ``DIR/state``."""
    if getattr(args, "state", None):
        return Path(args.state)
    root = Path(args.config)
    settings: Any = {}
    path = root / "hookd.yaml"
    if path.is_file():
        import yaml

        try:
            settings = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            settings = {}
    state = settings.get("state_dir") if isinstance(settings, dict) else None
    if state:
        return (root / Path(str(state)).expanduser()).absolute()
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    return (root / "state").absolute()


def open_store(args: argparse.Namespace) -> sqlite3.Connection | None:
    from hookd.store import db

    directory = state_dir(args)
    if not (directory / db.DB_NAME).is_file():
        print(f"hookd {args.command}: no store at {directory / db.DB_NAME} "
              "(has hookd run with this config?)", file=sys.stderr)
        return None
    return db.open_db(directory)


def run_list(args: argparse.Namespace) -> int:
    from hookd.store.runs import RunStore

    conn = open_store(args)
    if conn is None:
        return 2
    try:
        runs = RunStore(conn).list(flow=args.flow, status=args.status, limit=args.limit)
    finally:
        conn.close()
    if args.format == "json":
        print(json.dumps([r.to_json(steps=False) for r in runs], indent=2))
        return 0
    if not runs:
        print("no runs")
        return 0
    rows: list[tuple[str, ...]] = [("RUN", "FLOW", "STATUS", "ATTEMPT", "STARTED", "DURATION", "DELIVERY", "ERROR")]
    for r in runs:
        rows.append((r.id, r.flow, r.status, str(r.attempt), _time(r.started_at or r.created_at),
                     _duration(r.duration), r.delivery_id, _short(r.error or "", 60)))
    _table(rows)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from hookd.store.runs import RunStore

    conn = open_store(args)
    if conn is None:
        return 2
    try:
        run = RunStore(conn).get(args.run)
    finally:
        conn.close()
    if run is None:
        print(f"hookd runs show: no run {args.run!r}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(run.to_json(), indent=2, default=str))
        return 0
    print(f"run       {run.id}")
    print(f"flow      {run.flow}")
    print(f"status    {run.status}")
    print(f"attempt   {run.attempt}")
    print(f"delivery  {run.delivery_id}")
    print(f"started   {_time(run.started_at)}")
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
    return 0


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _time(ts: float | None) -> str:
    import datetime as dt

    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.1f}s"


def _short(text: str, limit: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
