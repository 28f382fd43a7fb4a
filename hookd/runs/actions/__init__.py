"""The step actions: what one step of a flow does once its inputs are rendered.

Each action lives in its own module with its `KIND` and one coroutine,
``execute(input: dict, ctx: ActionContext) -> output``, listed in `executors`; its input
type and schema are declared under the same name in `hookd.config.actions`. The pipeline renders the
action's fields (the `hookd.config.model` dataclass's fields, as a dict) with the run's
template context, records that input, and calls `execute`; whatever it returns is the
step's output (``steps.<id>.output``). Failures are `ActionError`, which says whether a
retry may help (`retryable`) and may carry a partial output (e.g. an HTTP response with an
unexpected status), so the run history shows what the target answered.

Actions do I/O and nothing else: no templating, no recording, no retry loops — those are
the pipeline's, so every action behaves the same under `retry`, `foreach` and `timeout`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hookd.config import model
from hookd.templating.engine import as_text as as_text  # the actions' one way to make text

if TYPE_CHECKING:
    import httpx

    from hookd.runs.egress import Target
    from hookd.upstream.client import Upstream


class ActionError(Exception):
    """A step attempt failed. `retryable` False means a retry would fail the same way
    (a 4xx, a bad argument); `retry_after` is a wait the target asked for, in seconds."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        output: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.output = output
        self.retry_after = retry_after


@dataclass
class ActionContext:
    """What actions may use; built once per run by the worker.

    `http` is shared by the http/notify actions (connection pooling); `upstream` is a
    `hookd.upstream.client.Upstream` for `call` (None when no connector calls are possible);
    `config` gives `call` its connectors and connections; `timeout` is the step's
    timeout (seconds) or None; `base_env` is the environment a `run` command starts from.
    """

    http: httpx.AsyncClient
    flow: str = ""
    run_id: str = ""
    delivery_id: str = ""
    config: model.Config | None = None
    upstream: Upstream | None = None
    timeout: float | None = None
    base_env: Mapping[str, str] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("hookd.flow"))
    default_timeout: float = 30.0
    # The step's url as `hookd.runs.egress.render_url` rendered it (set per step by the
    # pipeline for http/notify): whether its host came from a template.
    url: Target | None = None


Executor = Callable[[dict[str, Any], ActionContext], Awaitable[Any]]


@functools.cache
def executors() -> Mapping[str, Executor]:
    """Every action's ``execute``, by kind: one module per kind, one line each here.

    Imported on first use: the action modules import this package's `ActionContext`.
    `hookd.config.actions.ACTIONS` is the same table's other half (tests check they agree).
    """
    from hookd.runs.actions import call, http, log, notify, run
    from hookd.runs.actions import set as set_

    return {m.KIND: m.execute for m in (http, call, run, log, set_, notify)}


def executor(kind: str) -> Executor:
    """The ``execute`` coroutine of the action named `kind` (``http``, ``run``, …)."""
    try:
        return executors()[kind]
    except KeyError:
        raise ActionError(f"unknown action '{kind}'", retryable=False) from None
