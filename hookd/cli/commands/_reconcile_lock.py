"""`hookd apply` and `hookd teardown` reconcile as the leader, or not at all.

A store has one reconciler at a time: with PostgreSQL the replica holding the leader
lock (`hookd.store.postgres.leader`), with SQLite the daemon holding the state
directory's ``reconcile.lock`` (`hookd.store.leadership.Solo`). A manual apply that did
not take that lock could plan against the same records as the daemon's pass, in the
same minute, and both would create the same hook. So the command takes the same lock
and reconciles only while it holds it: while a running daemon (replica) leads, it
refuses (or, with ``--wait SECONDS``, waits that long for the lock: a daemon stopping,
another apply finishing), and no daemon leads until it is done (the next leader then
reconciles at once and finds everything as the command left it).

Refusing is the default because a daemon that leads keeps the lock for as long as it
runs and reconciles by itself on every config change; an operator who runs `hookd apply`
next to it wants to know that, not to wait for a lock that is never released.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Coroutine

    from hookd.store.interface import Store

T = TypeVar("T")


def add_wait_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for the reconcile lock when a running "
                        "daemon (or another apply) holds it (default 0: refuse at once)")


async def as_leader(store: Store, command: str, wait: float,
                    call: Callable[[], Coroutine[Any, Any, T]]) -> T | None:
    """`call()` while this process holds the store's leader lock; None after saying on
    stderr who holds it (nothing was done), or that the lock was lost half-way (its
    database session ended: a replica may lead now, so the pass stops where it is; what
    it did is recorded)."""
    import asyncio

    from hookd.store.leadership import lead_within

    running: asyncio.Task[T] | None = None
    lost = False

    def on_lost() -> None:
        nonlocal lost
        if running is not None and not running.done():
            lost = True
            running.cancel()

    leadership = store.leadership(on_lost=on_lost)
    leadership.start()
    try:
        if not await lead_within(leadership, 0):
            holder = await _holder(store)
            if wait > 0:
                print(f"hookd {command}: {holder} holds the reconcile lock; waiting "
                      f"up to {wait:g} s for it", file=sys.stderr)
            if wait <= 0 or not await lead_within(leadership, wait):
                print(_refusal(command, await _holder(store), wait), file=sys.stderr)
                return None
        running = asyncio.ensure_future(call())
        try:
            return await running
        except asyncio.CancelledError:
            if not lost:
                raise
            print(f"hookd {command}: lost the reconcile lock half-way (its database "
                  "session ended), so it stopped: what it did is recorded; run it again "
                  "(or let the replica that leads now reconcile)", file=sys.stderr)
            return None
    finally:
        await leadership.aclose()


async def _holder(store: Store) -> str:
    """Who leads, as a person would name it."""
    described = await store.describe()
    if described.get("leader"):
        return f"replica {described['leader']}"
    if described.get("backend") == "sqlite":
        return ("the daemon running on this state directory (or another `hookd apply` or "
                "`hookd teardown`)")
    return "another process (a `hookd apply` or `hookd teardown`, or a replica just starting)"


def _refusal(command: str, holder: str, wait: float) -> str:
    waited = f" after waiting {wait:g} s" if wait > 0 else ""
    if command == "teardown":
        advice = ("stop the daemon (every replica) first: it would create the hooks again; "
                  "then run it again")
    else:
        advice = ("a running daemon (the replica that leads) reconciles by itself on every "
                  "config change, on SIGHUP and every reconcile.interval; to apply by hand, "
                  "stop it or pass --wait SECONDS")
    return (f"hookd {command}: {holder} holds the reconcile lock{waited}; nothing was "
            f"changed. {advice[0].upper()}{advice[1:]}.")
