"""YAML parsing that remembers where every key and value was written.

`hookd check` must point at the line of the problem, not just name the file: a schema
error at key path ``steps[1].http.url`` is reported at the line and column of that value.
PyYAML's constructed data has no positions, so we compose the node graph (which carries
marks), construct the data from it, and walk both in step to record a mark for every key
path. Parsing uses libyaml (``CSafeLoader``) when available: `hookd check` on a thousand
flow files must stay well under a second.

The loader is YAML 1.2-ish on purpose, because config files are read by people:

- only ``true``/``false`` are booleans (``on``, ``yes``, ``no``… stay strings: a GitHub
  event list ``[push, on]`` must not turn into ``[push, True]``);
- dates stay strings (nothing in hookd wants a ``datetime``);
- mapping keys are strings (``404: …`` becomes ``"404"``), as in JSON;
- a key written twice in one mapping is an error, not "last one wins".

>>> doc, problems = parse("a:\\n  b: [1, 2]\\n", Path("x.yaml"))
>>> doc.data, doc.pos(("a", "b", 1)), problems
({'a': {'b': [1, 2]}}, (2, 10), [])
>>> key_path(("steps", 1, "http", "url"))
'steps[1].http.url'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from hookd.diagnostics import Diagnostic

KeyPath = tuple[str | int, ...]

if TYPE_CHECKING:  # the C loader has the pure one's interface (it is absent without libyaml)
    _BaseLoader = yaml.SafeLoader
else:
    _BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):
    """SafeLoader with strict booleans and no timestamps (see module docstring)."""

    # libyaml's composer calls back into Python three times per node (descend, resolve,
    # ascend): a third of the composing time of a flow file. With no path resolvers (asserted
    # below), descend and ascend do nothing, and the tag of a plain scalar depends on its text
    # alone.
    def descend_resolver(self, current_node: yaml.Node | None, current_index: object) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: type[yaml.Node], value: str | None, implicit: object) -> str:
        if kind is yaml.ScalarNode:
            # The composer's contract for a scalar: its text, and (plain?, quoted-plain?).
            text, plain = cast(str, value), cast("tuple[bool, bool]", implicit)
            if not plain[0]:
                return _STR_TAG  # quoted: always a string
            tag = _PLAIN_TAGS.get(text)
            if tag is None:
                tag = str(yaml.resolver.BaseResolver.resolve(self, kind, text, plain))
                if len(_PLAIN_TAGS) < 50_000:
                    _PLAIN_TAGS[text] = tag
            return tag
        return _SEQ_TAG if kind is yaml.SequenceNode else _MAP_TAG


_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
assert not _Loader.yaml_path_resolvers  # what lets the fast hooks above skip them

# The tag of each plain scalar text seen (bounded: config files repeat their words).
_PLAIN_TAGS: dict[str, str] = {}
_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"


@dataclass
class Document:
    """One parsed YAML file: its data and the 1-based (line, col) of every key path.

    `pos` gives where a value starts, `key_pos` where its key is written (the better
    place to point at for "unknown key"). Both fall back to the nearest ancestor that
    exists, so a diagnostic about a missing key points at the mapping that lacks it.
    """

    file: Path
    data: Any
    values: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def pos(self, path: Iterable[str | int]) -> tuple[int, int]:
        p = tuple(path)
        while p:
            found = self.values.get(p)
            if found is not None:
                return found
            p = p[:-1]
        return self.values.get((), (1, 1))

    def key_pos(self, path: Iterable[str | int]) -> tuple[int, int]:
        p = tuple(path)
        return self.keys.get(p) or self.pos(p)

    def diagnostic(
        self,
        path: Iterable[str | int],
        message: str,
        *,
        severity: str = "error",
        hint: str = "",
        at_key: bool = False,
    ) -> Diagnostic:
        """A diagnostic for the value (or key) at `path`, with its line:col and key path."""
        p = tuple(path)
        line, col = self.key_pos(p) if at_key else self.pos(p)
        return Diagnostic(self.file, line, col, severity, message, key_path(p), hint)  # type: ignore[arg-type]


def key_path(path: Iterable[str | int]) -> str:
    """``("steps", 1, "http", "url")`` → ``"steps[1].http.url"``; a leading index is ``[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse(text: str, file: Path) -> tuple[Document | None, list[Diagnostic]]:
    """Parse one YAML document; syntax errors come back as diagnostics with line:col.

    An empty file gives a document whose data is None.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        doc = Document(file, None, {(): (1, 1)})
        problems: list[Diagnostic] = []
        if node is not None:
            doc.data = _Builder(loader, doc, problems).build(node, ())
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_error(file, exc)]
    except yaml.YAMLError as exc:
        return None, [Diagnostic(file, 0, 0, "error", f"invalid YAML: {exc}")]
    finally:
        loader.dispose()
    return doc, problems


def _syntax_error(file: Path, exc: yaml.MarkedYAMLError) -> Diagnostic:
    """Point at the problem; for "end of stream" (an unclosed quote or bracket) point at
    where the unclosed thing started, which is where the fix goes."""
    problem, context = exc.problem_mark, exc.context_mark
    mark = problem or context
    hint = ""
    if context is not None and problem is not None and context.line != problem.line:
        if "end of stream" in (exc.problem or ""):
            mark = context
        else:
            hint = f"{exc.context} at line {context.line + 1}"
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
    message = exc.problem or "syntax error"
    if mark is context and exc.context:
        message = f"{exc.context}: {message}"
    return Diagnostic(file, line, col, "error", f"invalid YAML: {message}", hint=hint)


def load(file: Path) -> tuple[Document | None, list[Diagnostic]]:
    """Read and parse `file`. Raises `OSError` when it cannot be read (exit 2 territory).

    Undecodable bytes are an error diagnostic, not an exception: the file is there, it is
    just not UTF-8 text.
    """
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [Diagnostic(file, line, 0, "error", f"file is not UTF-8 text: {exc.reason}")]
    return parse(text, file)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"


class _Builder:
    """Builds JSON-like data from composed nodes, recording the mark of every key path.

    We build the containers ourselves (scalars go through the loader's constructor) so
    that keys become strings, duplicate keys are caught before "last one wins" hides
    them, and merge keys (``<<: *defaults``) keep the marks of where the values were
    written.
    """

    def __init__(self, loader: _Loader, doc: Document, problems: list[Diagnostic]) -> None:
        self.loader = loader
        self.doc = doc
        self.problems = problems
        self.active: set[int] = set()  # node ids on the current branch: recursive aliases

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        mark = node.start_mark
        self.doc.values[path] = (mark.line + 1, mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            # Most scalars are strings: skip the constructor's generic bookkeeping.
            return node.value if node.tag == _STR else self.loader.construct_object(node)
        if id(node) in self.active:
            raise yaml.MarkedYAMLError(problem="recursive alias", problem_mark=node.start_mark)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(n, (*path, i)) for i, n in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
        finally:
            self.active.discard(id(node))
        raise yaml.MarkedYAMLError(problem=f"unexpected node {node.tag}", problem_mark=node.start_mark)

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # Merged mappings (<<) go first so that the keys written here override them, with
        # their own marks; of several merged sources the first wins, hence reversed().
        for knode, vnode in node.value:
            if knode.tag != _MERGE:
                continue
            sources = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
            for src in reversed(sources):
                if not isinstance(src, yaml.MappingNode):
                    raise yaml.MarkedYAMLError(
                        problem="a merge key (<<) needs a mapping or a list of mappings",
                        problem_mark=src.start_mark,
                    )
                out.update(self._mapping(src, path))
        own: set[str] = set()
        for knode, vnode in node.value:
            if knode.tag == _MERGE:
                continue
            key = self._key(knode)
            child = (*path, key)
            if key in own:
                first = self.doc.keys[child]
                self.problems.append(
                    Diagnostic(self.doc.file, *_mark(knode), "error", f"duplicate key '{key}'",
                               key_path(child), f"first written at line {first[0]}")
                )
            own.add(key)
            self.doc.keys[child] = _mark(knode)
            out[key] = self.build(vnode, child)
        return out

    def _key(self, knode: yaml.Node) -> str:
        if not isinstance(knode, yaml.ScalarNode):
            raise yaml.MarkedYAMLError(
                problem="a mapping key must be a plain value", problem_mark=knode.start_mark
            )
        return str(knode.value)
