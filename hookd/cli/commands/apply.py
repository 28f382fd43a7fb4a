"""`hookd apply [DIR]`: run one reconcile now and print what it did.

Same pass as the daemon's: validate the config (an invalid one changes nothing), plan
(exactly what `hookd plan` prints), execute with bounded concurrency, record each step.
``--allow-deletes N`` raises ``reconcile.max_deletes`` for this run only. With many items a
progress line goes to stderr.

It reconciles only as the leader (`_reconcile_lock`): while a running daemon (on
PostgreSQL: a replica) leads it refuses, or waits ``--wait SECONDS`` for the lock.

Exit codes: 0 everything done, 1 invalid config, some step failed, or another process
holds the reconcile lock, 2 usage error, 3 done but deletes were blocked by ``max_deletes``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from hookd.cli.commands._common import (
    EXIT_CHANGES,
    EXIT_ERRORS,
    EXIT_OK,
    EXIT_USAGE,
    add_config_args,
    add_format_arg,
    add_state_arg,
    run_on,
)
from hookd.cli.commands._reconcile_lock import add_wait_arg, as_leader
from hookd.cli.commands.plan import (
    SYMBOLS,
    config_and_state,
    item_json,
    make_upstream,
    paint,
    render_plan,
    use_color,
)

if TYPE_CHECKING:
    from hookd.config.model import Config
    from hookd.store.interface import Subscriptions

PROGRESS_MIN_ITEMS = 20
RESULT_WORDS = {"create": "created", "replace": "replaced", "update": "updated",
                "adopt": "adopted",
                "delete": "deleted", "forget": "dropped record", "blocked": "blocked"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "apply",
        help="reconcile once now: create, replace and delete upstream subscriptions",
        description="Run one reconcile and print the report. Exit 0 done, 1 invalid config "
        "or a failed step, 3 done but deletes were blocked by max_deletes.",
    )
    add_config_args(parser)
    add_state_arg(parser)
    parser.add_argument("--allow-deletes", type=int, metavar="N", default=None,
                        help="allow up to N deletes in this run (overrides reconcile.max_deletes once)")
    add_wait_arg(parser)
    add_format_arg(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    if args.allow_deletes is not None and args.allow_deletes < 0:
        print("hookd apply: --allow-deletes must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    loaded = config_and_state(args, "apply", create=True)
    if loaded is None:
        return EXIT_ERRORS
    config, store, secret = loaded
    color = use_color(sys.stdout)
    report = run_on(store, lambda s: as_leader(s, "apply", args.wait, lambda: _apply(
        config, s.subscriptions, secret, args.allow_deletes,
        None if args.format == "json" else sys.stderr)))
    if report is None:
        return EXIT_ERRORS
    if args.format == "json":
        data = report.to_json()
        data["plan"] = [item_json(i) for i in report.plan.changes]
        print(json.dumps(data, indent=2))
    else:
        print(render_report(report, color=color))
    if report.failed():
        return EXIT_ERRORS
    return EXIT_CHANGES if any(o.result == "blocked" for o in report.outcomes) else EXIT_OK


async def _apply(config: Config, store: Subscriptions, secret: bytes, allow_deletes: int | None,
                 progress_stream: Any) -> Any:
    from hookd.reconcile.reconciler import Reconciler

    progress = Progress(progress_stream) if progress_stream is not None else None
    async with make_upstream(config) as upstream:
        reconciler = Reconciler(config, store, upstream, secret, progress=progress)
        the_plan = await reconciler.plan(allow_deletes=allow_deletes)
        if progress_stream is not None and the_plan.has_changes:
            print(render_plan(the_plan, color=use_color(progress_stream),
                              heading="hookd apply: plan"), file=progress_stream)
        report = await reconciler.apply(the_plan)
    if progress is not None:
        progress.finish()
    return report


class Progress:
    """``[n/N]`` on one rewritten line on a TTY, else a line every 10%."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.last_step = -1
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if total < PROGRESS_MIN_ITEMS:
            return
        elapsed = time.monotonic() - self.started
        text = f"apply: {done}/{total} done ({elapsed:.1f}s)"
        if self.tty:
            self.stream.write("\r" + text)
            self.shown = True
        else:
            step = done * 10 // total
            if step != self.last_step:
                self.last_step = step
                self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()


def render_report(report: Any, *, color: bool) -> str:
    lines: list[str] = []
    for o in report.outcomes:
        word = RESULT_WORDS.get(o.action, o.action) if o.result == "ok" else o.result.upper()
        action = o.action if o.result == "ok" else ("blocked" if o.result == "blocked"
                                                    else "delete")
        text = f"{SYMBOLS[o.action]} {word:<14} {o.flow or '(no flow)'}  {o.sub_id}"
        if o.detail and o.result != "ok" or o.action == "replace":
            text += f"\n      {o.detail}"
        lines.append(paint(text, action, color))
    for warning in report.plan.warnings:
        lines.append(f"warning: {warning}")
    ok = sum(o.result == "ok" for o in report.outcomes)
    failed = len(report.failed())
    blocked = sum(o.result == "blocked" for o in report.outcomes)
    kept = report.plan.counts()["keep"]
    if not report.outcomes:
        lines.append(f"No changes. {kept} subscription(s) up to date.")
    else:
        summary = f"Applied: {ok} done, {failed} failed, {blocked} blocked, {kept} unchanged"
        lines.append(f"{summary} in {report.duration:.1f}s.")
    if blocked:
        lines.append("Blocked deletes: check the plan, then `hookd apply --allow-deletes N`.")
    return "\n".join(lines)
