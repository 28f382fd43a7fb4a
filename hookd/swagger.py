"""Pure functions over a Swagger 2.0 document, apart from files and diagnostics.

`Resolver` inlines local ``$ref``s (once each, cycles guarded), `marked_paths` finds the
properties of a request that carry a marker such as ``x-ms-notification-url`` by walking
the schema the operation really uses, and `match_delete` picks the DELETE operation that
most likely removes what a trigger created. `hookd.openapi` drives them; they are kept
here so each can be table-tested on small literal documents.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hookd.connector import RequestPath
from hookd.diagnostics import did_you_mean


def truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def key_path(path: Sequence[str | int]) -> str:
    """A readable key path: ``paths["/hooks"].post.parameters[2]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_$][\w$-]*", part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


class Resolver:
    """Resolves local ``$ref``s once each (shared results), guarding against cycles.

    A reference to a definition that is being resolved (a recursive schema) becomes
    ``{"x-hookd-recursive": "#/definitions/Node"}`` so that resolved schemas stay finite
    and JSON-serialisable.
    """

    def __init__(self, spec: Any, report: Callable[[str, str, str], None]) -> None:
        """`report(ref, message, hint)` is called once per bad reference."""
        self.spec = spec
        self.report = report
        self.done: dict[str, Any] = {}
        self.active: set[str] = set()

    def resolve(self, node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                target = self.ref(ref)
                if len(node) == 1:
                    return target
                # Siblings of $ref (x-ms-summary, x-ms-notification-url…) refine the target.
                rest = {k: self.resolve(v) for k, v in node.items() if k != "$ref"}
                return {**target, **rest} if isinstance(target, dict) else rest
            out: dict[str, Any] | None = None
            for key, value in node.items():
                if not isinstance(value, (dict, list)):
                    continue  # most leaves: skip the call (this loop is the loader's hot spot)
                new = self.resolve(value)
                if new is not value:
                    if out is None:
                        out = dict(node)
                    out[key] = new
            return node if out is None else out
        if isinstance(node, list):
            items = [self.resolve(v) for v in node]
            return node if all(a is b for a, b in zip(items, node, strict=True)) else items
        return node

    def ref(self, ref: str) -> Any:
        if ref in self.done:
            return self.done[ref]
        if ref in self.active:
            return {"x-hookd-recursive": ref}
        target = self._lookup(ref)
        if target is None:
            self.done[ref] = {}
            return {}
        self.active.add(ref)
        try:
            resolved = self.resolve(target)
        finally:
            self.active.discard(ref)
        self.done[ref] = resolved
        return resolved

    def _lookup(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            self.report(ref, f"external $ref '{ref}' is not supported; treated as {{}}", "")
            return None
        node: Any = self.spec
        for raw in ref[2:].split("/"):
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part not in node:
                part = urllib.parse.unquote(part)  # "#/definitions/Error%20message"
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                section = ref[2:].split("/")[0]
                names = list(self.spec.get(section) or {}) if isinstance(self.spec, dict) else []
                hint = did_you_mean(ref.rsplit("/", 1)[-1], names)
                self.report(ref, f"unresolved $ref '{ref}'; treated as {{}}", hint)
                return None
        return node


def marked_paths(schema: Any, marker: str, prefix: RequestPath = ("body",)) -> list[RequestPath]:
    """Paths of the properties of a resolved schema that carry `marker` (walks
    ``properties``, ``allOf`` and array ``items`` — an array item is index ``0``).

    >>> marked_paths({"properties": {"config": {"properties": {"url": {"x-ms-notification-url": True}}}}},
    ...              "x-ms-notification-url")
    [('body', 'config', 'url')]
    """
    out: list[RequestPath] = []
    _walk_marked(schema, marker, prefix, out, 0)
    return out


def _walk_marked(schema: Any, marker: str, path: RequestPath, out: list[RequestPath], depth: int) -> None:
    if not isinstance(schema, Mapping) or depth > 32:
        return
    if truthy(schema.get(marker)) and path not in out:
        out.append(path)
    props = schema.get("properties")
    if isinstance(props, Mapping):
        for key, sub in props.items():
            _walk_marked(sub, marker, (*path, str(key)), out, depth + 1)
    for sub in schema.get("allOf") or ():
        _walk_marked(sub, marker, path, out, depth + 1)
    items = schema.get("items")
    if isinstance(items, Mapping):
        _walk_marked(items, marker, (*path, "0"), out, depth + 1)


def match_delete(
    trigger_path: str, deletes: Sequence[tuple[str, str]]
) -> tuple[str, str, str] | None:
    """The DELETE operation most likely to remove a hook created by ``POST trigger_path``.

    `deletes` are ``(operationId, path)``. Returns ``(operationId, source, id_param)``
    where source is ``child-path`` (``/x`` ↔ ``/x/{id}``, or deeper with only parameters),
    ``same-path`` (same path; the id goes in a parameter), ``sibling``
    (``/x/subscribe`` ↔ ``/x/{id}``) or ``shared-prefix`` (the longest common meaningful
    prefix), in that order of preference; None when nothing relates.

    >>> match_delete("/repos/{owner}/{repo}/hooks", [("rm", "/repos/{owner}/{repo}/hooks/{hook_id}")])
    ('rm', 'child-path', 'hook_id')
    >>> match_delete("/webhooks/ticketcreated", [("del", "/webhooks/{webhookId}")])
    ('del', 'sibling', 'webhookId')
    >>> match_delete("/api/v1/hooks", [("u", "/api/v1/users/{id}")]) is None
    True
    """
    trig = _segments(trigger_path)
    trig_params = {s.lower() for s in trig if _is_param(s)}
    best: tuple[int, int, int, str, str, str] | None = None  # (rank, -prefix, len, …)
    for order, (op_id, path) in enumerate(deletes):
        segs = _segments(path)
        new = [s for s in segs if _is_param(s) and s.lower() not in trig_params]
        id_param = new[-1][1:-1] if new else ""
        common = _common_prefix(trig, segs)
        kind = ""
        if len(segs) > len(trig) and common == len(trig) and all(_is_param(s) for s in segs[common:]):
            kind = "child-path"
        elif common == len(segs) == len(trig):
            kind = "same-path"
        elif (
            len(segs) == len(trig)
            and common == len(trig) - 1
            and _is_param(segs[-1])
            and not _is_param(trig[-1])
        ):
            kind = "sibling"
        elif id_param and any(not _is_param(s) and not _GENERIC.match(s) for s in trig[:common]):
            kind = "shared-prefix"
        if not kind or (not id_param and kind != "same-path"):
            continue
        rank = ("child-path", "same-path", "sibling", "shared-prefix").index(kind)
        candidate = (rank, -common, len(segs), f"{order:06d}", op_id, kind)
        if best is None or candidate < best:
            best = candidate
            best_param = id_param
    if best is None:
        return None
    return best[4], best[5], best_param


_GENERIC = re.compile(r"^(api|rest|v\d+(\.\d+)*|\d+(\.\d+)*|public|latest)$", re.IGNORECASE)


def _segments(path: str) -> list[str]:
    return [s for s in path.strip("/").split("/") if s]


def _is_param(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        same = (_is_param(x) and _is_param(y)) or x.lower() == y.lower()
        if not same:
            break
        n += 1
    return n
