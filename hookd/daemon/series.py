"""The daemon's own metric series, rendered with the others on ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hookd.daemon import reload


def daemon_series(metrics: Any, reloader: reload.Reloader, draining: Callable[[], bool],
                  revision: Callable[[], str]) -> list[Any]:
    """The reload, draining and revision series (`metrics`: `hookd.telemetry.metrics`)."""
    return [
        metrics.Family("hookd_config_reloads_total",
                       "Config loads by outcome: applied (the start counts), or rejected "
                       "(invalid; the last good config keeps running).",
                       "counter", "outcome", lambda: reloader.counts),
        metrics.Gauge("hookd_config_rejected",
                      "1 while the newest config on disk is rejected, else 0.",
                      lambda: 0 if reloader.last.ok else 1),
        metrics.Gauge("hookd_config_last_reload_timestamp_seconds",
                      "When the config was last loaded (applied or rejected).",
                      lambda: reloader.last.at),
        metrics.Gauge("hookd_draining", "1 while shutting down.", lambda: int(draining())),
        # The running revision as Prometheus "info" metrics do it (a label on a
        # constant), for dashboards that mark config changes.
        metrics.Family("hookd_config_info", "The running config revision (label), always 1.",
                       "gauge", "revision", lambda: {revision(): 1}),
    ]
