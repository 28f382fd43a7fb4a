"""The report of one reconcile pass: what each plan item came to.

Its own module because three callers read it and none of them executes anything:
`hookd apply` and `hookd teardown` print it, the daemon logs and counts it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from hookd.subscriptions import plan as planning

Result = Literal["ok", "failed", "blocked", "unmanageable"]


@dataclass(frozen=True)
class Outcome:
    sub_id: str
    flow: str
    action: planning.Action
    result: Result
    detail: str = ""


@dataclass
class Report:
    plan: planning.Plan
    outcomes: list[Outcome] = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return all(o.result == "ok" for o in self.outcomes if o.action != "blocked")

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result in ("failed", "unmanageable")]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "duration": round(self.duration, 3),
            "warnings": list(self.plan.warnings),
            "outcomes": [o.__dict__ for o in self.outcomes],
        }


Progress = Callable[[int, int], None]
