"""The daemon's own metric series, rendered with the others on ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from hookd.daemon import reload


class RevisionInfo:
    """``hookd_config_info{revision="…"} 1``: the running revision, as Prometheus "info"
    metrics do it (a label on a constant), for dashboards that mark config changes."""

    name = "hookd_config_info"
    help = "The running config revision (label), always 1."
    kind = "gauge"

    def __init__(self, revision_: Callable[[], str]) -> None:
        self.revision = revision_

    def samples(self) -> Iterator[str]:
        value = self.revision().replace("\\", "\\\\").replace('"', '\\"')
        yield f'{self.name}{{revision="{value}"}} 1'


class ReloadCounts:
    """``hookd_config_reloads_total{outcome}``, read from the reloader's counts."""

    name = "hookd_config_reloads_total"
    help = ("Config loads by outcome: applied (the start counts), or rejected (invalid; "
            "the last good config keeps running).")
    kind = "counter"

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def samples(self) -> Iterator[str]:
        for outcome, n in self.counts.items():
            yield f'{self.name}{{outcome="{outcome}"}} {n}'


def daemon_series(metrics: Any, reloader: reload.Reloader, draining: Callable[[], bool],
                  revision: Callable[[], str]) -> list[Any]:
    """The reload, draining and revision series (`metrics`: `hookd.telemetry.metrics`)."""
    return [
        ReloadCounts(reloader.counts),
        metrics.Gauge("hookd_config_rejected",
                      "1 while the newest config on disk is rejected, else 0.",
                      lambda: 0 if reloader.last.ok else 1),
        metrics.Gauge("hookd_config_last_reload_timestamp_seconds",
                      "When the config was last loaded (applied or rejected).",
                      lambda: reloader.last.at),
        metrics.Gauge("hookd_draining", "1 while shutting down.", lambda: int(draining())),
        RevisionInfo(revision),
    ]
