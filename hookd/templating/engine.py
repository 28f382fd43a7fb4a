"""One expression language for step values and conditions: sandboxed Jinja2.

Flow files are written by operators but render data sent by strangers (webhook bodies),
so templates run in Jinja2's *immutable sandbox*: no attribute access to dunder/internal
names, no mutation of the context. Templates are compiled once, when the config is loaded
(`compile_value`), so a syntax error is reported by `hookd check` with the expression, not
discovered at 3 a.m. by a delivery. At run time a missing name or a failing filter raises
`TemplateError` naming the expression and the missing name — a step failure the run
history can show, never a traceback.

Rendering rules (what a user sees):

- A string that is exactly one ``{{ expr }}`` renders to the *native* value of the
  expression: ``"{{ trigger.body.commits }}"`` is a list, ``"{{ 1 + 1 }}"`` is ``2``.
- Any other template renders to a string. Inside such a string ``None`` prints as ``""``,
  booleans as ``true``/``false`` and dicts/lists as compact JSON, because these strings
  end up in HTTP bodies, URLs and command arguments, not in Python.
- Dicts and lists are walked; only their string leaves are templates. Keys are literal.
- Conditions (``if:``) render, then apply `truthy`: the strings ``""``, ``"false"`` and
  ``"0"`` (any case, surrounding blanks ignored) are false. A condition may omit the
  braces: ``if: trigger.body.ref == 'refs/heads/main'`` (see `compile_condition`).

Example::

    >>> compile_value({"n": "{{ body.commits | length }}", "msg": "by {{ body.who }}"}).render(
    ...     {"body": {"commits": [1, 2], "who": "ada"}})
    {'n': 2, 'msg': 'by ada'}
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from jinja2 import ChainableUndefined, StrictUndefined, Undefined, nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

__all__ = [
    "Compiled",
    "TemplateError",
    "body_paths",
    "compile_condition",
    "compile_value",
    "is_template",
    "render_value",
    "truthy",
]


class TemplateError(Exception):
    """A template that does not parse or cannot be rendered.

    `expression` is the template text as written; `line` is the 1-based line inside it
    (0 when unknown); `key_path` locates the string inside a nested value
    (e.g. ``headers.Authorization``), empty for a top-level string.
    """

    def __init__(self, expression: str, message: str, *, line: int = 0, key_path: str = ""):
        self.expression = expression
        self.message = message
        self.line = line
        self.key_path = key_path
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" at {self.key_path}" if self.key_path else ""
        line = f" (line {self.line} of the template)" if self.line > 1 else ""
        return f"{self.message}{where} in `{_shorten(self.expression)}`{line}"

    def at(self, key: str | int) -> TemplateError:
        """The same error, located one level further out (``key`` + current path)."""
        path = f"{key}.{self.key_path}" if self.key_path else str(key)
        return TemplateError(self.expression, self.message, line=self.line, key_path=path)


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Undefined(ChainableUndefined, StrictUndefined):
    """Strict (printing, comparing or iterating a missing value fails) but chainable, so
    ``trigger.body.a.b | default('x')`` works when ``a`` is missing; the error names the
    first missing name, which is the one the user mistyped or the payload lacks."""

    __slots__ = ()

    # Comparing a missing value is allowed (``trigger.body.ref == 'refs/heads/main'`` is
    # false for an event without ``ref``); printing, iterating or arithmetic still fail.
    __eq__ = Undefined.__eq__  # type: ignore[assignment]
    __ne__ = Undefined.__ne__  # type: ignore[assignment]
    __hash__ = Undefined.__hash__  # type: ignore[assignment]

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        if self._undefined_obj is missing:
            return f"undefined name '{self._undefined_name}'"
        kind = type(self._undefined_obj).__name__
        return f"missing key or attribute '{self._undefined_name}' (on a {kind})"


def as_text(value: Any) -> str:
    """How a rendered value becomes text — an argv item, a header, a body — the same way
    it prints inside a larger template string: booleans lowercase, None empty,
    containers as compact JSON."""
    return str(_finalize(value))


def _finalize(value: Any) -> Any:
    # How a value prints inside a larger string (see module docstring).
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return value


def _tojson(value: Any, indent: int | None = None) -> str:
    # Jinja's own `tojson` HTML-escapes <, >, & and '; webhook bodies want plain JSON.
    return json.dumps(value, indent=indent, ensure_ascii=False, default=str)


def _fromjson(text: str) -> Any:
    return json.loads(text)


def _make_env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=_Undefined,
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=True,
    )
    env.filters["tojson"] = _tojson
    env.filters["fromjson"] = _fromjson
    return env


# Every template is compiled in this one environment; `hookd.templating.analysis` parses
# with it too, so `hookd check` sees exactly the runtime's syntax, filters and tests.
ENVIRONMENT = _make_env()
_MARKERS = ("{{", "{%", "{#")
_SINGLE_EXPR = re.compile(r"\A\{\{-?(.*?)-?\}\}\Z", re.DOTALL)


def is_template(text: object) -> bool:
    """True when `text` is a string containing Jinja2 syntax (``{{``, ``{%`` or ``{#``)."""
    return isinstance(text, str) and any(m in text for m in _MARKERS)


def truthy(value: Any) -> bool:
    """Condition semantics: Python truthiness, except that the strings "", "false" and "0"
    (any case, blanks ignored) are false — a template that printed a boolean or a count
    into text must still mean what it says."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0")
    return bool(value)


# --------------------------------------------------------------------------- compiled


class Compiled:
    """A compiled value; `render(context)` returns the rendered JSON-like value."""

    __slots__ = ("source", "_render", "is_constant")

    def __init__(self, source: Any, render: Callable[[Mapping[str, Any]], Any], constant: bool):
        self.source = source  # the value as written
        self._render = render
        self.is_constant = constant  # no template anywhere inside

    def render(self, context: Mapping[str, Any]) -> Any:
        """Render against `context`; raises `TemplateError` (never another exception)."""
        return self._render(context)

    def __repr__(self) -> str:
        return f"Compiled({self.source!r})"


def compile_value(value: Any) -> Compiled:
    """Compile a JSON-like value whose strings may be templates.

    Raises `TemplateError` (with the expression, its line and the key path) on a syntax
    error. Non-string scalars and plain strings are constants.
    """
    if isinstance(value, str):
        return _compile_string(value)
    if isinstance(value, Mapping):
        items: list[tuple[Any, Compiled]] = []
        for key, sub in value.items():
            try:
                items.append((key, compile_value(sub)))
            except TemplateError as exc:
                raise exc.at(key) from None
        if all(c.is_constant for _, c in items):
            return _constant(value)

        def render_dict(ctx: Mapping[str, Any]) -> Any:
            out: dict[Any, Any] = {}
            for key, compiled in items:
                try:
                    out[key] = compiled.render(ctx)
                except TemplateError as exc:
                    raise exc.at(key) from None
            return out

        return Compiled(value, render_dict, False)
    if isinstance(value, list | tuple):
        elems: list[Compiled] = []
        for i, sub in enumerate(value):
            try:
                elems.append(compile_value(sub))
            except TemplateError as exc:
                raise exc.at(i) from None
        if all(c.is_constant for c in elems):
            return _constant(value)
        as_tuple = isinstance(value, tuple)

        def render_list(ctx: Mapping[str, Any]) -> Any:
            out: list[Any] = []
            for i, compiled in enumerate(elems):
                try:
                    out.append(compiled.render(ctx))
                except TemplateError as exc:
                    raise exc.at(i) from None
            return tuple(out) if as_tuple else out

        return Compiled(value, render_list, False)
    return _constant(value)


def compile_condition(text: str) -> Compiled:
    """Compile an ``if:`` condition. Braces are optional: a condition without template
    markers is taken as one expression (``a == b`` means ``{{ a == b }}``)."""
    if isinstance(text, str) and not is_template(text):
        try:
            return _compile_string("{{ " + text + " }}", shown=text)
        except TemplateError as exc:
            raise TemplateError(text, exc.message, line=exc.line) from None
    return compile_value(text)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Compile and render in one go (for values not compiled at load time)."""
    return compile_value(value).render(context)


def _constant(value: Any) -> Compiled:
    return Compiled(value, lambda _ctx: value, True)


def _compile_string(text: str, *, shown: str | None = None) -> Compiled:
    if not is_template(text):
        return _constant(text)
    shown = text if shown is None else shown
    try:
        tree = ENVIRONMENT.parse(text)
        match = _SINGLE_EXPR.match(text)
        if match and _is_single_output(tree):
            expr = ENVIRONMENT.compile_expression(match.group(1), undefined_to_none=False)

            def render_native(ctx: Mapping[str, Any]) -> Any:
                try:
                    result = expr(**ctx)
                    if isinstance(result, _Undefined):
                        result._fail_with_undefined_error()
                    return result
                except Exception as exc:  # noqa: BLE001 - every failure becomes a step error
                    _raise_render_error(shown, exc)

            return Compiled(text, render_native, False)
        template = ENVIRONMENT.from_string(tree)
    except TemplateSyntaxError as exc:
        raise TemplateError(shown, f"syntax error: {exc.message}", line=exc.lineno or 0) from None

    def render_text(ctx: Mapping[str, Any]) -> Any:
        try:
            return template.render(ctx)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a step error
            _raise_render_error(shown, exc)

    return Compiled(text, render_text, False)


def _is_single_output(tree: nodes.Template) -> bool:
    body = tree.body
    return (
        len(body) == 1
        and isinstance(body[0], nodes.Output)
        and len(body[0].nodes) == 1
        and not isinstance(body[0].nodes[0], nodes.TemplateData)
    )


def _raise_render_error(expression: str, exc: Exception) -> NoReturn:
    if isinstance(exc, TemplateError):
        raise exc
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if type(exc).__name__ not in ("UndefinedError", "SecurityError"):
        message = f"{type(exc).__name__}: {message}"
    raise TemplateError(expression, message, line=getattr(exc, "lineno", 0) or 0) from None


# --------------------------------------------------------------------------- body paths


def body_paths(text: str, *, condition: bool = False) -> list[tuple[str, ...]]:
    """The ``trigger.body.…`` paths a template reads, for `hookd check`.

    ``"{{ trigger.body.commits | length }}"`` → ``[("commits",)]``;
    ``"{{ trigger.body['repository'].name }}"`` → ``[("repository", "name")]``. A path
    stops at the first dynamic subscript; an integer subscript appears as its decimal
    string (``commits[0].id`` → ``("commits", "0", "id")``: "an item of this array").
    Reading ``trigger.body`` whole yields nothing. With ``condition=True`` a brace-less
    condition is accepted as in `compile_condition`. Returns ``[]`` for text that is not a
    template or does not parse (syntax errors are `compile_value`'s to report).
    """
    if condition and isinstance(text, str) and not is_template(text):
        text = "{{ " + text + " }}"
    if not is_template(text):
        return []
    try:
        tree = ENVIRONMENT.parse(text)
    except TemplateSyntaxError:
        return []
    found: list[tuple[str, ...]] = []
    walk_body_paths(tree, found)
    seen: set[tuple[str, ...]] = set()
    out: list[tuple[str, ...]] = []
    for path in found:
        if path and path not in seen:
            seen.add(path)
            out.append(path)
    return out


def walk_body_paths(node: nodes.Node, found: list[tuple[str, ...]]) -> None:
    """Append to `found` every ``trigger.body.…`` path read under `node` (in order, repeats
    included)."""
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        chain, rest = _chain(node)
        if chain is not None:
            found.append(chain)
        for child in rest:
            walk_body_paths(child, found)
        return
    for child in node.iter_child_nodes():
        walk_body_paths(child, found)


def _chain(node: nodes.Node) -> tuple[tuple[str, ...] | None, list[nodes.Node]]:
    """Resolve ``trigger.body.a[b].c`` to its body path; also return the sub-nodes still
    to walk (dynamic subscripts, and the base when it is not ``trigger``)."""
    segments: list[str | None] = []  # outermost last after reversal; None = dynamic
    rest: list[nodes.Node] = []
    cur: nodes.Node = node
    while isinstance(cur, nodes.Getattr | nodes.Getitem):
        if isinstance(cur, nodes.Getattr):
            segments.append(cur.attr)
        elif isinstance(cur.arg, nodes.Const) and isinstance(cur.arg.value, str | int):
            segments.append(str(cur.arg.value))
        else:
            segments.append(None)
            rest.append(cur.arg)
        cur = cur.node
    segments.reverse()
    if not (isinstance(cur, nodes.Name) and cur.name == "trigger"):
        rest.append(cur)
        return None, rest
    if not segments or segments[0] != "body":
        return None, rest
    path: list[str] = []
    for seg in segments[1:]:
        if seg is None:
            break
        path.append(seg)
    return tuple(path), rest
