"""The checks of a flow's steps that need no connector: ids and templates.

A template in a flow reads ``trigger.body.…`` paths of a payload that arrives later,
``env.X`` and ``steps.X``: `check_steps` says, before anything runs, which of those
cannot work — a path the trigger's notification schema does not have, an environment
variable outside hookd.yaml's allow-list, a step that has not run yet — and which
templates do not parse. What a ``call`` step names (connector, operation, connection,
parameters) is checked with the connectors, in `hookd.config.check`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hookd.config.yamlpos import KeyPath
from hookd.connectors.model import Schema
from hookd.diagnostics import Diagnostic
from hookd.templating.analysis import analyse, schema_path_problem, suggest

if TYPE_CHECKING:
    from hookd.config.check import Located
    from hookd.config.model import Flow

# Step keys that are settings, not action input; `if` and `foreach` are templates too.
_STEP_SETTINGS = frozenset({"id", "timeout", "retry", "continue_on_error", "if", "foreach"})


def check_steps(
    flow: Located[Flow], trigger_schema: Schema | None, env_allow: frozenset[str] | None,
) -> list[Diagnostic]:
    """Unique step ids, and every template of the flow: does it parse, and does what it
    reads exist (trigger body paths in the schema, allow-listed env, earlier steps)."""
    out: list[Diagnostic] = []
    ids: dict[str, int] = {}
    # Templates in the trigger are rendered when subscribing: they must parse.
    trigger_scope = _Scope(env_allow)
    for sub in ("parameters", "body"):
        for path, text in strings(flow.raw(("trigger", sub)), ("trigger", sub)):
            out.extend(_check_template(flow, path, text, False, None, trigger_scope))
    all_ids = frozenset(s.id for s in flow.item.steps)
    for i, step in enumerate(flow.item.steps):
        base: KeyPath = ("steps", i)
        if step.id in ids:
            out.append(flow.diag((*base, "id"), f"duplicate step id '{step.id}'",
                                 hint=f"also used by steps[{ids[step.id]}]"))
        else:
            ids[step.id] = i
        raw = flow.raw(base)
        if not isinstance(raw, Mapping):
            continue
        for key, value in raw.items():
            if key in _STEP_SETTINGS and key not in ("if", "foreach"):
                continue
            scope = _Scope(env_allow, i, frozenset(s.id for s in flow.item.steps[:i]), all_ids)
            for path, text in strings(value, (*base, key)):
                out.extend(_check_template(flow, path, text, key == "if", trigger_schema, scope))
    return out


def _check_template(
    flow: Located[Flow], path: KeyPath, text: str, condition: bool,
    schema: Schema | None, scope: _Scope,
) -> list[Diagnostic]:
    analysis = analyse(text, condition)
    if analysis.error:
        return [flow.diag(path, f"bad template: {analysis.error}")]
    out: list[Diagnostic] = []
    trigger = flow.item.trigger
    if schema is not None:
        for body_path in analysis.body_paths:
            problem = schema_path_problem(schema, body_path)
            if problem is not None:
                index, hint = problem
                shown = ".".join(("trigger", "body", *body_path[: index + 1]))
                out.append(flow.diag(
                    path, f"{shown} is not in the notification schema of {trigger.connector}/{trigger.operation}",
                    severity="warning", hint=hint))
    for root, name in analysis.names:
        if root == "env" and scope.env_allow is not None and name not in scope.env_allow:
            out.append(flow.diag(path, f"env.{name} is not in the env allow-list of hookd.yaml: templates cannot read it",
                                 severity="warning", hint=f"add it to hookd.yaml: env: [{name}]"))
        elif root == "steps" and scope.step is not None and name not in scope.earlier:
            if name in scope.all_ids:
                message = f"steps.{name} is read before step '{name}' has run"
                hint = "a step can only read the output of the steps before it"
            else:
                message = f"no step '{name}' in this flow (steps.{name})"
                hint = suggest(name, scope.all_ids)
            out.append(flow.diag(path, message, severity="warning", hint=hint))
    return out


@dataclass(frozen=True)
class _Scope:
    """What a template may read besides the trigger: allow-listed env, earlier steps."""

    env_allow: frozenset[str] | None = None  # None = unknown (no settings): not checked
    step: int | None = None  # index of the step the template is in; None in the trigger
    earlier: frozenset[str] = frozenset()
    all_ids: frozenset[str] = frozenset()


def strings(value: Any, path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    """Every string in a YAML value, with its key path (where a template may be)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, sub in value.items():
            yield from strings(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from strings(sub, (*path, i))
