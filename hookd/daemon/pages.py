"""The status page's wiring: what the daemon hands `hookd.admin.pages`.

The page needs a few facts only the running daemon has (the last reload, the last and
next reconcile pass) and the daemon's hooks (poke the worker, draining); this module
turns them into the page's `Site` and `DaemonView`, so `lifecycle` only records the
last reconcile pass and mounts `routes`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hookd import __version__
from hookd.telemetry import logs

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from hookd.admin.pages.models import DaemonView
    from hookd.daemon.status import ReloadOutcome
    from hookd.ingest.app import AppState


@dataclasses.dataclass(frozen=True)
class ReconcilePass:
    """How the last reconcile pass went."""

    at: float
    reason: str
    ok: bool
    summary: str = ""  # e.g. "2 keep, 1 create"
    error: str = ""


def outcome_summary(counts: dict[str, int]) -> str:
    """``{"keep:ok": 2, "create:error": 1}`` → ``"1 create:error, 2 keep"``.

    >>> outcome_summary({"keep:ok": 2, "create:error": 1})
    '1 create:error, 2 keep'
    """
    return ", ".join(f"{n} {k.removesuffix(':ok')}" for k, n in sorted(counts.items()))


def daemon_view(*, revision: str, started_at: float, last_reload: ReloadOutcome,
                last_reconcile: ReconcilePass | None, scheduler: Any) -> DaemonView:
    """The overview's daemon facts; `scheduler` (apscheduler's, or None before it starts)
    says when the next reconcile is due."""
    from hookd.admin.pages import models

    reload_view = models.ReloadView(last_reload.at, last_reload.trigger, last_reload.ok,
                                    last_reload.revision, tuple(last_reload.errors))
    job = scheduler.get_job("reconcile") if scheduler is not None else None
    next_at = job.next_run_time.timestamp() if job is not None and job.next_run_time else None
    done = last_reconcile
    reconcile_view = models.ReconcileView(
        at=done.at if done else None, reason=done.reason if done else "",
        ok=done.ok if done else True, summary=done.summary if done else "",
        error=logs.REDACTOR.redact(done.error) if done else "", next_at=next_at)
    return models.DaemonView(version=__version__, started_at=started_at, revision=revision,
                             last_reload=reload_view, reconcile=reconcile_view)


def routes(state: AppState, server_secret: bytes, facts: Callable[[], DaemonView], *,
           token: Callable[[], str], poke: Callable[[], None],
           draining: Callable[[], bool]) -> list[BaseRoute]:
    """The status page at ``/``, signed in with the admin token (`token()`: the current
    one, `hookd.admin.auth`'s, which follows reloads), checked by `token_matches`."""
    from hookd.admin import auth
    from hookd.admin.pages import reads, views

    site = views.Site(
        config=lambda: state.config, store=reads.Reads.of(state.store),
        server_secret=server_secret, admin_token=token, daemon=facts,
        token_ok=lambda presented: auth.token_matches(token(), f"Bearer {presented}"),
        poke=poke, draining=draining,
    )
    return views.routes(site)
