"""Execute one run of a flow: its steps in order, each recorded as it happens.

For each step: evaluate ``if`` (skipped when false), render the action's inputs with the
run's template context, record the start with the rendered input (secrets replaced by
``***``), execute the action, record the end with the output or the error. ``foreach``
runs the action once per item of a list (``item`` in templates; ``if`` is then evaluated
per item); ``retry`` repeats a failed attempt after an exponential backoff with jitter;
``continue_on_error`` lets the run go on after the step failed for good.

Because every start and end is committed before the next thing happens, a run is
resumable: `execute` skips the steps the store already holds as finished — reloading
their outputs for later templates — and starts at the first one that is not. A step that
was interrupted mid-way runs again (at-least-once), so side-effecting steps should be
idempotent or guarded by ``if``.

The decisions (`retry_delay`, `truthy` conditions, `redact`) are pure functions; the
run history is the injected `hookd.store.interface.RunHistory` (the worker's store groups
the writes of one loop turn into one commit), and ``sleep``/``rng`` are injectable so
retry tests take no time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hookd.callbacks import payload
from hookd.config import model
from hookd.config.secrets import SecretError
from hookd.runs import egress
from hookd.runs.actions import ActionContext, ActionError, executor
from hookd.store.interface import RunHistory
from hookd.store.records import Delivery, steps_done
from hookd.templating import engine as templating

log = logging.getLogger("hookd.runs.pipeline")

MASK = "***"


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``queued`` means interrupted by a stop, to be resumed."""

    status: Literal["succeeded", "failed", "queued"]
    error: str | None = None


# --------------------------------------------------------------------------- pure parts


def retry_delay(policy: model.RetryPolicy, failures: int, rnd: float,
                retry_after: float | None = None) -> float:
    """Seconds to wait after the `failures`-th failed attempt (1-based).

    Exponential: ``delay * 2**(failures-1)``, capped at ``max_delay``, then "equal
    jitter" — a random point in the upper half (``rnd`` in [0, 1)) so that many runs
    failing together do not retry in lockstep, yet never retry sooner than half the
    backoff. Fixed: ``delay`` each time (no jitter). A ``Retry-After`` the target sent
    wins when longer, still capped at ``max_delay``.
    """
    if policy.backoff == "fixed":
        base = min(policy.delay, policy.max_delay)
    else:
        base = min(policy.max_delay, policy.delay * (2 ** max(failures - 1, 0)))
        base = base / 2 + (base / 2) * rnd
    if retry_after is not None:
        base = max(base, min(retry_after, policy.max_delay))
    return base


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """`value` with every occurrence of each secret (in any string, at any depth, and in
    dict keys) replaced by ``***``; longest secrets first so overlaps mask fully."""
    ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
    if not ordered:
        return value

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            for s in ordered:
                if s in v:
                    v = v.replace(s, MASK)
            return v
        if isinstance(v, Mapping):
            return {walk(k): walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v

    return walk(value)


_READS_SECRETS = re.compile(r"\bsecrets\b")
_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)


def derived_from_secrets(source: Any, rendered: Any) -> list[str]:
    """What the templates in `source` that read ``secrets`` rendered, as text to mask.

    Masking resolved values catches a secret only as it is: ``{{ secrets.T | upper }}``
    or ``{{ secrets.T | b64encode }}`` went to run history as is. So a template that reads
    ``secrets`` taints what it renders: the text its expressions produced (the literal text
    around them, ``Bearer ``, stays readable when the template has no ``{%`` blocks), which
    the run then masks everywhere, as it masks the secrets themselves — in this step's
    inputs and output and in any later step that copies it.

    >>> derived_from_secrets({"h": "Bearer {{ secrets.T | upper }}", "n": "{{ x }}"},
    ...                      {"h": "Bearer ABCDEF", "n": "plain"})
    ['ABCDEF']
    >>> derived_from_secrets(["{% if secrets.T %}{{ secrets.T[::-1] }}{% endif %}"], ["FEDCBA"])
    ['FEDCBA']
    """
    out: list[str] = []
    if isinstance(source, str):
        if templating.is_template(source) and _READS_SECRETS.search(source):
            out.extend(_expression_text(source, rendered))
    elif isinstance(source, Mapping) and isinstance(rendered, Mapping):
        for key, sub in source.items():
            if key in rendered:
                out.extend(derived_from_secrets(sub, rendered[key]))
    elif isinstance(source, list | tuple) and isinstance(rendered, list | tuple):
        for sub, value in zip(source, rendered, strict=False):
            out.extend(derived_from_secrets(sub, value))
    return [v for v in out if len(v) >= MIN_DERIVED]


MIN_DERIVED = 4  # shorter pieces (a length, a flag) would mask ordinary text everywhere


def _expression_text(source: str, rendered: Any) -> list[str]:
    """The parts of `rendered` that `source`'s ``{{ … }}`` expressions produced."""
    if not isinstance(rendered, str):
        return [s for s in _strings(rendered)]
    if "{%" in source or "{#" in source:
        return [rendered]  # blocks: what is literal is not known
    literals = _EXPRESSION.split(source)
    rest = rendered
    if not (rest.startswith(literals[0]) and rest.endswith(literals[-1])):
        return [rendered]
    rest = rest[len(literals[0]):len(rest) - len(literals[-1])]
    pieces = [rest]
    for literal in literals[1:-1]:
        if literal:
            pieces = [p for piece in pieces for p in piece.split(literal)]
    return [p for p in pieces if p]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return [str(value)] if value is not None and not isinstance(value, bool) else []


def action_fields(action: model.Action) -> dict[str, Any]:
    """The action's inputs as written (a dict of its dataclass fields): what is rendered
    and recorded, and what the action's ``execute`` receives after rendering."""
    return {f.name: getattr(action, f.name) for f in dataclasses.fields(action)}


# --------------------------------------------------------------------------- context


class Secrets(Mapping[str, str]):
    """``secrets.NAME`` in templates: resolved on first use, remembered for redaction.

    ``secrets.NAME`` reads the systemd credential ``NAME`` when
    ``$CREDENTIALS_DIRECTORY/NAME`` exists, else the environment variable ``NAME``;
    ``secrets['file:relative/or/absolute/path']`` and ``secrets['env:NAME']`` name the
    source explicitly. It cannot be listed or printed whole.
    """

    def __init__(self, environ: Mapping[str, str] | None = None,
                 base_dir: Path | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._base_dir = base_dir
        self._cache: dict[str, str] = {}
        self.resolved: set[str] = set()

    def __getitem__(self, name: str) -> str:
        if name in self._cache:
            return self._cache[name]
        value = self._resolve(name)
        self.remember(value)
        self._cache[name] = value
        return value

    def _resolve(self, name: str) -> str:
        from hookd.config import secrets as sec

        if ":" in name:
            ref = sec.parse_ref("${" + name + "}")
            if ref is None:
                raise sec.SecretError(name, "not a secret reference (env:NAME, file:PATH, "
                                            "credential:NAME)")
            return sec.resolve(ref, env=self._environ, base_dir=self._base_dir)
        creds = self._environ.get("CREDENTIALS_DIRECTORY")
        if creds and (Path(creds) / name).is_file():
            return sec.resolve(model.SecretRef("credential", name), env=self._environ)
        return sec.resolve(model.SecretRef("env", name), env=self._environ)

    def resolve_ref(self, ref: model.SecretRef) -> str:
        from hookd.config import secrets as sec

        value = sec.resolve(ref, env=self._environ, base_dir=self._base_dir)
        self.remember(value)
        return value

    def remember(self, value: str) -> None:
        self.resolved.add(value)
        with contextlib.suppress(Exception):  # logging redaction is best effort
            from hookd.telemetry.logs import register_secret

            register_secret(value)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<secrets>"


def trigger_context(delivery: Delivery) -> dict[str, Any]:
    """``trigger`` for templates from a recorded delivery."""
    raw = delivery.body or b""
    body: Any
    try:
        # Under the listener's depth limit (a delivery recorded before it had one is text).
        payload.check_depth(raw)
        body = json.loads(raw) if raw else None
    except (ValueError, payload.Refused):
        body = raw.decode("utf-8", "replace")
    received = dt.datetime.fromtimestamp(delivery.received_at, dt.UTC)
    return {
        "body": body,
        "headers": dict(delivery.headers),
        "event": delivery.event,
        "delivery_id": delivery.id,
        "received_at": received.isoformat().replace("+00:00", "Z"),
    }


def base_context(
    flow: model.Flow, delivery: Delivery, run_id: str, attempt: int, *,
    env_allow: Iterable[str] = (), environ: Mapping[str, str] | None = None,
    secrets: Secrets | None = None,
) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    return {
        "trigger": trigger_context(delivery),
        "steps": {},
        "flow": {"name": flow.name},
        "run": {"id": run_id, "attempt": attempt},
        "env": {n: environ[n] for n in env_allow if n in environ},
        "secrets": secrets if secrets is not None else Secrets(environ),
    }


# --------------------------------------------------------------------------- compiled flows


@dataclass(frozen=True)
class CompiledStep:
    step: model.Step
    index: int
    condition: templating.Compiled | None
    foreach: templating.Compiled | None
    inputs: templating.Compiled


_compiled: dict[int, tuple[model.Flow, list[CompiledStep]]] = {}


def compile_flow(flow: model.Flow) -> list[CompiledStep]:
    """Compile a flow's templates once per Flow object (the loader already checked them;
    a flow built elsewhere gets its TemplateError here, before anything runs)."""
    hit = _compiled.get(id(flow))
    if hit is not None and hit[0] is flow:
        return hit[1]
    out = []
    for i, step in enumerate(flow.steps):
        out.append(CompiledStep(
            step=step,
            index=i,
            condition=templating.compile_condition(step.if_) if step.if_ is not None else None,
            foreach=templating.compile_value(step.foreach) if step.foreach is not None else None,
            inputs=templating.compile_value(action_fields(step.action)),
        ))
    if len(_compiled) > 256:  # configs are reloaded; old flows must not pile up
        _compiled.clear()
    _compiled[id(flow)] = (flow, out)
    return out


# --------------------------------------------------------------------------- execution


class _StepFailed(Exception):
    def __init__(self, message: str, output: Any = None) -> None:
        super().__init__(message)
        self.output = output


@dataclass
class Pipeline:
    """Executes runs; one instance per worker (it holds the injected dependencies)."""

    store: RunHistory
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    rng: Callable[[], float] = random.random
    environ: Mapping[str, str] | None = None

    async def execute(
        self,
        flow: model.Flow,
        delivery: Delivery,
        run_id: str,
        actx: ActionContext,
        *,
        attempt: int = 1,
        env_allow: Iterable[str] = (),
        should_stop: Callable[[], bool] = lambda: False,
        fresh: bool = False,
        finish_delivery: bool = False,
    ) -> Outcome:
        """Run (or resume) `run_id` of `flow` for `delivery`; returns how it ended and
        has recorded that in the store.

        `fresh` says the run was just created as ``running`` with no steps (nothing to
        load or start). With `finish_delivery` the delivery's outcome is written in the
        same transaction as the run's (the worker's case), so both commit together."""
        on_finish = delivery.id if finish_delivery else None
        base_dir = actx.config.directory if actx.config is not None else None
        secrets = Secrets(self.environ, base_dir)
        ctx = base_context(flow, delivery, run_id, attempt, env_allow=env_allow,
                           environ=self.environ, secrets=secrets)
        try:
            steps = compile_flow(flow)
        except templating.TemplateError as exc:
            return await self._finish(run_id, "failed", f"flow does not compile: {exc}", on_finish)
        done = {}
        if not fresh:
            await self.store.start(run_id)
            done = steps_done(await self.store.steps(run_id))
        for cs in steps:
            step = cs.step
            previous = done.get(step.id)
            if previous is not None:
                # Finished before a crash or stop: not executed again.
                ctx["steps"][step.id] = {"output": previous.output, "status": previous.status,
                                         "error": previous.error}
                if previous.status == "failed" and not step.continue_on_error:
                    return await self._finish(run_id, "failed",
                                              f"step {step.id}: {previous.error}", on_finish)
                continue
            if should_stop():
                return await self._finish(run_id, "queued", None, on_finish)
            result = await self._run_step(cs, ctx, actx, run_id, secrets)
            ctx["steps"][step.id] = result
            if result["status"] == "failed" and not step.continue_on_error:
                return await self._finish(run_id, "failed", f"step {step.id}: {result['error']}", on_finish)
        return await self._finish(run_id, "succeeded", None, on_finish)

    async def _finish(self, run_id: str, status: Literal["succeeded", "failed", "queued"],
                      error: str | None, delivery_id: str | None = None) -> Outcome:
        await self.store.finish(run_id, status, error, delivery_id=delivery_id)
        return Outcome(status, error)

    async def _run_step(self, cs: CompiledStep, ctx: dict[str, Any], actx: ActionContext,
                        run_id: str, secrets: Secrets) -> dict[str, Any]:
        step = cs.step
        kind = step.kind

        async def record(status: Literal["succeeded", "failed", "skipped"],
                         output: Any = None, error: str | None = None) -> None:
            await self.store.step_finished(run_id, step.id, status, output=output,
                                           error=error, index=cs.index, kind=kind)

        async def failed(message: str, output: Any = None) -> dict[str, Any]:
            # Recorded and returned with every resolved secret value masked.
            error, out = redact(message, secrets.resolved), redact(output, secrets.resolved)
            await record("failed", error=error, output=out)
            return {"output": out, "status": "failed", "error": error}

        try:
            if cs.foreach is None:
                if cs.condition is not None and not templating.truthy(cs.condition.render(ctx)):
                    await record("skipped")
                    return {"output": None, "status": "skipped", "error": None}
                items: list[Any] | None = None
            else:
                rendered = cs.foreach.render(ctx)
                if not isinstance(rendered, list | tuple):
                    raise _StepFailed(f"foreach must render a list, not {type(rendered).__name__}")
                items = list(rendered)
        except (templating.TemplateError, _StepFailed) as exc:
            return await failed(str(exc))

        step_actx = dataclasses.replace(actx, timeout=step.timeout)
        execute = executor(kind)
        try:
            if items is None:
                output = await self._attempts(cs, ctx, step_actx, execute, run_id, secrets)
            else:
                output = []
                for item in items:
                    item_ctx = {**ctx, "item": item}
                    if cs.condition is not None and not templating.truthy(
                        cs.condition.render(item_ctx)
                    ):
                        output.append(None)
                        continue
                    try:
                        output.append(await self._attempts(cs, item_ctx, step_actx, execute,
                                                           run_id, secrets))
                    except _StepFailed as exc:
                        raise _StepFailed(str(exc), [*output, exc.output]) from None
        except templating.TemplateError as exc:
            return await failed(str(exc))
        except _StepFailed as exc:
            return await failed(str(exc), exc.output)
        await record("succeeded", output=redact(output, secrets.resolved))
        return {"output": output, "status": "succeeded", "error": None}

    async def _attempts(self, cs: CompiledStep, ctx: dict[str, Any], actx: ActionContext,
                        execute: Any, run_id: str, secrets: Secrets) -> Any:
        """Render and execute one action with the step's retry policy."""
        step = cs.step
        policy = step.retry
        attempts = max(policy.attempts, 1)
        for attempt in range(1, attempts + 1):
            try:
                inputs = resolve_refs(cs.inputs.render(ctx), secrets)
            except SecretError as exc:
                raise _StepFailed(str(exc)) from None
            for derived in derived_from_secrets(cs.inputs.source, inputs):
                secrets.remember(derived)  # masked from here on, as a secret is
            if isinstance(step.action, model.HttpAction | model.NotifyAction):
                # The url again, so that no template can move its host (hookd.runs.egress).
                try:
                    target = egress.render_url(step.action.url, ctx)
                except templating.TemplateError as exc:
                    raise _StepFailed(str(exc)) from None
                if target is not None:
                    inputs["url"] = target.url
                actx = dataclasses.replace(actx, url=target)
            await self.store.step_started(run_id, step.id, cs.index, step.kind, attempt,
                                          redact(inputs, secrets.resolved))
            retryable, retry_after, output = True, None, None
            try:
                if step.timeout is not None:
                    # Backstop: actions honour actx.timeout themselves (run kills its
                    # process group); this also bounds everything else they await.
                    return await asyncio.wait_for(execute(inputs, actx), step.timeout + 1.0)
                return await execute(inputs, actx)
            except ActionError as exc:
                error, retryable = str(exc), exc.retryable
                retry_after, output = exc.retry_after, exc.output
            except TimeoutError:
                error = f"timed out after {step.timeout:g}s"
            except Exception as exc:  # noqa: BLE001 - an action bug fails the step, not the worker
                error = f"{type(exc).__name__}: {exc}"
                log.exception("action crashed", extra={"step": step.id, "run": run_id})
            if attempt >= attempts or not retryable:
                suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise _StepFailed(error + suffix, output)
            delay = retry_delay(policy, attempt, self.rng(), retry_after)
            await self.store.step_retrying(
                run_id, step.id,
                redact(f"attempt {attempt} failed: {error}; retrying in {delay:.1f}s",
                       secrets.resolved),
                redact(output, secrets.resolved))
            log.info("step retry", extra={"run": run_id, "step": step.id, "attempt": attempt,
                                          "delay": round(delay, 3), "error": error})
            await self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def resolve_refs(value: Any, secrets: Secrets) -> Any:
    """Replace `SecretRef` leaves (a step value that was exactly ``${env:X}``) by their
    values, remembered for redaction."""
    if isinstance(value, model.SecretRef):
        return secrets.resolve_ref(value)
    if isinstance(value, Mapping):
        return {k: resolve_refs(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_refs(v, secrets) for v in value]
    if isinstance(value, tuple):
        return tuple(resolve_refs(v, secrets) for v in value)
    return value
