"""Static analysis of templates for `hookd check`: valid?, and what do they read?

A template in a flow reads ``trigger.body.…`` paths of a payload that arrives later, from
someone else. Whether those paths exist can be known now, from the trigger's
notification schema: `analyse` extracts what a template reads (body paths, ``env.X``,
``steps.X``) and `schema_path_problem` says where a path leaves the schema.

Thousands of templates go through here on every check, so `analyse` is cached and
recognises the common simple templates (``{{ a.b.c }}``, ``{{ a.b | f('x') }}``,
``{{ a.b == 'x' }}`` in text) with regular expressions, far cheaper than Jinja's
parser (docs/adr/0007); everything else is parsed by Jinja with the environment of `hookd.templating.engine`,
so the syntax, filters and tests are exactly the runtime's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from hookd.connectors.model import Schema
from hookd.diagnostics import did_you_mean


class Analysis(NamedTuple):
    error: str  # "" when the template is valid
    body_paths: tuple[tuple[str, ...], ...] = ()  # trigger.body.… paths read
    names: tuple[tuple[str, str], ...] = ()  # ("env", NAME) and ("steps", ID) read


@functools.lru_cache(maxsize=8192)
def analyse(text: str, condition: bool) -> Analysis:
    """What one template reads, and whether it is valid; parsed once and cached because
    flows repeat templates.

    Parsing and checking filter/test names finds what compiling finds (syntax errors,
    unknown filters) at a seventh of the cost, and the common simple templates skip even
    the parse (`analyse_simple`): `hookd check` sees thousands of templates. Uses the
    templating engine's `ENVIRONMENT` (same syntax, filters and tests).
    """
    from hookd.templating import engine as templating

    source = text
    if condition and not templating.is_template(text):
        source = "{{ " + text + " }}"
    elif not templating.is_template(text):
        return Analysis("")
    simple = analyse_simple(source, templating.ENVIRONMENT.filters)
    return simple if simple is not None else analyse_jinja(source, text)


def analyse_jinja(source: str, text: str) -> Analysis:
    """`analyse` by Jinja's own parser: exact for every template."""
    from jinja2 import nodes
    from jinja2.exceptions import TemplateSyntaxError

    from hookd.templating.engine import ENVIRONMENT as env
    from hookd.templating.engine import walk_body_paths as walk

    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        where = f" (line {exc.lineno} of the template)" if (exc.lineno or 0) > 1 else ""
        return Analysis(f"syntax error: {exc.message} in `{_shorten(text)}`{where}")
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        table, what = (env.filters, "filter") if isinstance(node, nodes.Filter) else (env.tests, "test")
        if node.name not in table:
            hint = suggest(node.name, table)
            return Analysis(f"unknown {what} '{node.name}' in `{_shorten(text)}`" + (f"; {hint}" if hint else ""))
    found: list[tuple[str, ...]] = []
    if "body" in text:
        walk(tree, found)
    names: list[tuple[str, str]] = []
    if "env" in text or "steps" in text:
        for ref in tree.find_all((nodes.Getattr, nodes.Getitem)):
            assert isinstance(ref, nodes.Getattr | nodes.Getitem)  # what find_all was asked for
            base = ref.node
            if not (isinstance(base, nodes.Name) and base.name in ("env", "steps")):
                continue
            if isinstance(ref, nodes.Getattr):
                names.append((base.name, ref.attr))
            elif isinstance(ref.arg, nodes.Const) and isinstance(ref.arg.value, str):
                names.append((base.name, ref.arg.value))
    return Analysis("", tuple(dict.fromkeys(p for p in found if p)), tuple(dict.fromkeys(names)))


# Most templates are text with ``{{ a.b.c }}``, ``{{ a.b | filter }}`` or
# ``{{ a.b == 'x' }}`` in it. Those are recognised by regular expressions, which is ~20x
# cheaper than Jinja's lexer and parser; anything else goes to Jinja.
# tests/test_check.py checks that both give the same answer.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = rf"{_NAME}(?:\.{_NAME}|\[\d+\])*"
_LITERAL = r"'[^'\\{}]*'|\d+"
_FILTER = rf"\|\s*{_NAME}(?:\(\s*(?:{_LITERAL})?\s*\))?\s*"
_SIMPLE_EXPR = re.compile(
    rf"\s*({_PATH})\s*(?:(?:==|!=)\s*(?:{_LITERAL})\s*)?((?:{_FILTER})*)"
)
_EXPR = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_SEGMENT = re.compile(rf"\.({_NAME})|\[(\d+)\]")
_FILTER_NAME = re.compile(rf"\|\s*({_NAME})")
_KEYWORDS = frozenset({"true", "false", "none", "True", "False", "None", "not", "and", "or",
                       "in", "is", "if", "else", "loop", "self", "recursive"})


def analyse_simple(source: str, filters: Mapping[str, Any]) -> Analysis | None:
    """`analyse` for a template in the simple form above, or None when it is not."""
    body: list[tuple[str, ...]] = []
    names: list[tuple[str, str]] = []
    end = 0
    for match in _EXPR.finditer(source):
        if any(m in source[end:match.start()] for m in ("{%", "{#", "{{")):
            return None
        end = match.end()
        expr = _SIMPLE_EXPR.fullmatch(match.group(1))
        if expr is None:
            return None
        path, filter_text = expr.group(1), expr.group(2)
        root = path.split(".", 1)[0].split("[", 1)[0]
        segments = [a or b for a, b in _SEGMENT.findall(path[len(root):])]
        if root in _KEYWORDS or any(seg in _KEYWORDS for seg in segments):
            return None
        for name in _FILTER_NAME.findall(filter_text):
            if name not in filters:
                return None  # let Jinja's path report it
        if root == "trigger" and segments[:1] == ["body"] and len(segments) > 1:
            body.append(tuple(segments[1:]))
        elif root in ("env", "steps") and segments and not path[len(root):].startswith("["):
            names.append((root, segments[0]))
    if any(m in source[end:] for m in ("{%", "{#", "{{")):
        return None
    return Analysis("", tuple(dict.fromkeys(body)), tuple(dict.fromkeys(names)))


# The literal text of a URL template before its first ``{`` ends the host: the origin
# (scheme, user, host, port) is fixed by the config (hookd.runs.egress).
_LITERAL_ORIGIN = re.compile(r"^\s*https?://[^/?#{}\s]*(?=[/?#])", re.IGNORECASE)


def literal_origin(url: str) -> str | None:
    """The origin a URL template fixes in literal text (``https://h.example``), or None
    when a template can reach into the scheme, user, host or port.

    >>> literal_origin("https://h.example/{{ p }}"), literal_origin("http://h:1{{ p }}")
    ('https://h.example', None)
    >>> literal_origin("{{ env.URL }}"), literal_origin("https://h.example{% if x %}/a{% endif %}")
    (None, None)
    """
    match = _LITERAL_ORIGIN.match(url)
    if match is None or "{%" in url or "{#" in url:
        return None
    return match.group(0)


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def schema_path_problem(schema: Schema, path: Sequence[str]) -> tuple[int, str] | None:
    """Where `path` leaves `schema` (index of the bad segment, hint), or None if it fits.

    Follows ``properties`` and ``items`` (a numeric segment is an item); a name outside
    ``properties`` is allowed only when ``additionalProperties`` says so; a schema that
    declares no properties at all (``{"type": "object"}``) accepts anything below it.

    >>> s = {"type": "object", "properties": {"pusher": {"properties": {"name": {}}}}}
    >>> schema_path_problem(s, ("pusher", "name")) is None
    True
    >>> schema_path_problem(s, ("pusher", "nmae"))
    (1, "did you mean 'name'?")
    """
    node: Any = schema
    for i, seg in enumerate(path):
        node = flatten_schema(node)
        if not node:
            return None
        is_array = node.get("type") == "array" or "items" in node
        if seg.isdigit():
            items = node.get("items")
            if not isinstance(items, Mapping):
                return None
            node = items
            continue
        if is_array:
            return i, f"'{'.'.join(path[:i]) or 'body'}' is a list: use [0] or a loop"
        props = node.get("properties")
        if not isinstance(props, Mapping):
            return None
        if seg in props:
            node = props[seg]
            continue
        extra = node.get("additionalProperties")
        if isinstance(extra, Mapping):
            node = extra
            continue
        if extra is True:
            return None
        return i, suggest(seg, props) or known("keys here", props)
    return None


def flatten_schema(schema: Any) -> dict[str, Any]:
    """A schema with allOf/anyOf/oneOf branches merged (a union of their properties)."""
    if not isinstance(schema, Mapping):
        return {}
    branches = [b for k in ("allOf", "anyOf", "oneOf") for b in schema.get(k) or () if isinstance(b, Mapping)]
    if not branches:
        return dict(schema)
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k not in ("allOf", "anyOf", "oneOf")}
    props: dict[str, Any] = dict(merged.get("properties") or {})
    required: list[str] = list(merged.get("required") or [])
    for branch in branches:
        flat = flatten_schema(branch)
        props.update(flat.get("properties") or {})
        for key, value in flat.items():
            if key not in ("properties", "required"):
                merged.setdefault(key, value)
    if "allOf" in schema:
        for branch in schema["allOf"]:
            required += list(flatten_schema(branch).get("required") or [])
    if props:
        merged["properties"] = props
    if required:
        merged["required"] = required
    return merged


def suggest(word: str, candidates: Any) -> str:
    """`did_you_mean`, cached: a thousand flows often share the same typo."""
    return _suggest_cached(word, tuple(sorted(candidates)))


@functools.lru_cache(maxsize=1024)
def _suggest_cached(word: str, candidates: tuple[str, ...]) -> str:
    return did_you_mean(word, candidates)


def known(what: str, names: Any) -> str:
    listed = sorted(names)
    if not listed:
        return ""
    more = f", … ({len(listed)} in all)" if len(listed) > 8 else ""
    return f"{what}: {', '.join(listed[:8])}{more}"
