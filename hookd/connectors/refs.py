"""Pure functions over a Swagger 2.0 document, apart from files and diagnostics.

`Resolver` inlines local ``$ref``s (once each, cycles guarded), `marked_paths` finds the
properties of a request that carry a marker such as ``x-ms-notification-url`` by walking
the schema the operation really uses, and `match_delete` picks the DELETE operation that
most likely removes what a trigger created. `hookd.connectors.loader` drives them; they are kept
here so each can be table-tested on small literal documents.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hookd.connectors.model import RequestPath
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
        # The loader's hot spot (every container of every operation's parameters and
        # success responses, ~10^5 in the corpus): exact type checks (JSON and YAML give
        # plain dicts and lists), leaves skipped without a call, copies only on change.
        kind = type(node)
        if kind is dict:
            ref = node.get("$ref")
            if ref.__class__ is str:
                target = self.ref(ref)
                if len(node) == 1:
                    return target
                # Siblings of $ref (x-ms-summary, x-ms-notification-url…) refine the target.
                rest = {k: self.resolve(v) for k, v in node.items() if k != "$ref"}
                return {**target, **rest} if isinstance(target, dict) else rest
            out: dict[str, Any] | None = None
            for key, value in node.items():
                vkind = value.__class__
                if vkind is not dict and vkind is not list:
                    continue
                new = self.resolve(value)
                if new is not value:
                    if out is None:
                        out = dict(node)
                    out[key] = new
            return node if out is None else out
        if kind is list:
            items: list[Any] | None = None
            for index, value in enumerate(node):
                vkind = value.__class__
                if vkind is not dict and vkind is not list:
                    continue
                new = self.resolve(value)
                if new is not value:
                    if items is None:
                        items = list(node)
                    items[index] = new
            return node if items is None else items
        if isinstance(node, (dict, list)):  # subclasses: not from a parser, but allowed
            return self.resolve(dict(node) if isinstance(node, dict) else list(node))
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


@dataclass(frozen=True)
class DeleteCandidate:
    """A DELETE operation of the spec; `id_params` are its required non-path parameters
    the trigger does not have (where an id could go when the path has none)."""

    operation_id: str
    path: str
    id_params: tuple[str, ...] = ()


def match_delete(trigger_path: str, deletes: Sequence[DeleteCandidate]) -> tuple[str, str, str] | None:
    """The DELETE operation most likely to remove a hook created by ``POST trigger_path``.

    Returns ``(operationId, source, id_param)``, trying in order:

    - ``child-path``: ``/x`` ↔ ``/x/{id}`` (or deeper, only parameters: ``/x/{t}/{id}``);
    - ``same-path``: ``DELETE /x``, the id in a required parameter;
    - ``sibling``: ``/x/subscribe`` ↔ ``/x/{id}``;
    - ``shared-prefix``: the longest common prefix with a meaningful segment (not
      ``api``, ``v1``…);
    - ``hook-like``: the one and only DELETE in the spec that looks like it removes a hook.

    A wrong guess would delete user data (``POST /accounts/hooks/insert`` next to
    ``DELETE /accounts/{id}`` deletes an *account*), so every match but ``child-path`` and
    ``same-path`` must look hook-related: its operationId, or its path past the shared
    prefix, or its last literal segment names a hook, subscription, callback, trigger….
    None when nothing qualifies: hookd then relies on the ``Location`` header alone.

    >>> match_delete("/repos/{owner}/{repo}/hooks", [DeleteCandidate("rm", "/repos/{owner}/{repo}/hooks/{hook_id}")])
    ('rm', 'child-path', 'hook_id')
    >>> match_delete("/webhooks/ticketcreated", [DeleteCandidate("del", "/webhooks/{webhookId}")])
    ('del', 'sibling', 'webhookId')
    >>> match_delete("/contacts/subscribe", [DeleteCandidate("DeleteContact", "/contacts/{id}")]) is None
    True
    """
    trig = _segments(trigger_path)
    trig_params = {s.lower() for s in trig if _is_param(s)}
    ranked: list[tuple[int, int, int, int, str, str, str]] = []
    hook_like: list[tuple[str, str]] = []
    for order, candidate in enumerate(deletes):
        segs = _segments(candidate.path)
        new = [s[1:-1] for s in segs if _is_param(s) and s.lower() not in trig_params]
        id_param = new[-1] if new else (candidate.id_params[0] if candidate.id_params else "")
        if not id_param:
            continue  # nothing to put the hook's id in
        common = _common_prefix(trig, segs)
        looks_like_hook = _looks_like_hook(candidate.operation_id, segs, common)
        if looks_like_hook:
            hook_like.append((candidate.operation_id, id_param))
        kind = ""
        if len(segs) > len(trig) and common == len(trig) and all(_is_param(x) for x in segs[common:]):
            kind = "child-path"
        elif common == len(segs) == len(trig):
            kind = "same-path"
        elif not looks_like_hook:
            continue
        elif (len(segs) == len(trig) and common == len(trig) - 1 and _is_param(segs[-1])
              and not _is_param(trig[-1])):
            kind = "sibling"
        elif any(not _is_param(x) and not _GENERIC.match(x) for x in trig[:common]):
            kind = "shared-prefix"
        else:
            continue
        rank = ("child-path", "same-path", "sibling", "shared-prefix").index(kind)
        ranked.append((rank, -common, len(segs), order, candidate.operation_id, kind, id_param))
    if ranked:
        _, _, _, _, op_id, kind, id_param = min(ranked)
        return op_id, kind, id_param
    if len(hook_like) == 1:
        op_id, id_param = hook_like[0]
        return op_id, "hook-like", id_param
    return None


_HOOKISH = re.compile(r"hook|subscri|regist|callback|trigger|notif|listen", re.IGNORECASE)


def _looks_like_hook(operation_id: str, segments: list[str], common: int) -> bool:
    literals = [s for s in segments if not _is_param(s)]
    own = [s for s in segments[common:] if not _is_param(s)]
    return any(_HOOKISH.search(text) for text in (operation_id, *own, *literals[-1:]))


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
