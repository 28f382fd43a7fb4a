"""The files of a connector as read: text or YAML with a way back to line and column.

Real connector files are not always RFC JSON (BOMs, Latin-1, trailing commas): they are
read with `hookd.connectors.lenientjson`, which keeps positions, so that every diagnostic
the builder makes can name ``file:line:col``. A connector is the Power Platform layout
(``apiDefinition.swagger.json`` + ``apiProperties.json``) or one OpenAPI file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hookd.connectors import lenientjson
from hookd.diagnostics import Diagnostic

SPEC_FILE = "apiDefinition.swagger.json"
PROPERTIES_FILE = "apiProperties.json"
SINGLE_FILE_SUFFIXES = (".json", ".yaml", ".yml")


def find_file(directory: Path, name: str) -> Path | None:
    """`name` in `directory`, ignoring case (the upstream repo has ``apidefinition…``)."""
    exact = directory / name
    if exact.is_file():
        return exact
    lower = name.lower()
    try:
        return next((p for p in directory.iterdir() if p.name.lower() == lower and p.is_file()), None)
    except OSError:
        return None


# --------------------------------------------------------------------------- documents


@dataclass
class Document:
    """A parsed JSON or YAML file and a way to turn a key path into ``line:col``."""

    file: Path
    value: Any
    text: str
    locate: Callable[[Sequence[str | int]], tuple[int, int]]
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def find(self, needle: str) -> tuple[int, int]:
        """``line:col`` of the first occurrence of `needle` in the text, else (0, 0)."""
        offset = self.text.find(needle)
        return lenientjson.position(self.text, offset) if offset >= 0 else (0, 0)


def read_document(path: Path) -> Document:
    if path.suffix.lower() in (".yaml", ".yml"):
        return _read_yaml(path)
    parsed = lenientjson.load(path)
    return Document(path, parsed.value, parsed.text, parsed.locate, parsed.diagnostics)


def _read_yaml(path: Path) -> Document:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return Document(path, None, "", _no_position,
                        [Diagnostic(path, 0, 0, "error", f"cannot read: {exc}")])
    loader: _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C: when built with libyaml
    try:
        value = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        problem = getattr(exc, "problem", None) or str(exc)
        return Document(path, None, text, _no_position,
                        [Diagnostic(path, line, col, "error", f"invalid YAML: {problem}")])
    return Document(path, value, text, _yaml_locator(text, loader))


_SafeLoader = type[yaml.SafeLoader] | type[yaml.CSafeLoader]


def _no_position(path: Sequence[str | int]) -> tuple[int, int]:
    return 0, 0


def _yaml_locator(text: str, loader: _SafeLoader) -> Callable[[Sequence[str | int]], tuple[int, int]]:
    """Compose the node tree only when a diagnostic needs a position."""
    root: list[yaml.Node | None] = []

    def locate(path: Sequence[str | int]) -> tuple[int, int]:
        if not root:
            try:
                root.append(yaml.compose(text, Loader=loader))
            except yaml.YAMLError:
                root.append(None)
        node = root[0]
        if node is None:
            return 0, 0
        mark = node.start_mark
        for part in path:
            if isinstance(node, yaml.MappingNode):
                match = next((kv for kv in node.value if kv[0].value == str(part)), None)
                if match is None:
                    break
                mark, node = match[0].start_mark, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                mark = node.start_mark
            else:
                break
        return mark.line + 1, mark.column + 1

    return locate


def read_properties(directory: Path) -> tuple[Document | None, list[Diagnostic]]:
    """apiProperties.json, tolerated when missing or broken: it only names connection
    parameters, which hookd can derive from ``securityDefinitions``."""
    path = find_file(directory, PROPERTIES_FILE)
    if path is None:
        return None, [Diagnostic(directory / PROPERTIES_FILE, 0, 0, "warning",
                                 f"no {PROPERTIES_FILE}: connection parameters are derived "
                                 "from securityDefinitions")]
    doc = read_document(path)
    if doc.value is None:
        # Demote: a broken apiProperties.json does not stop the connector from working.
        demoted = [
            Diagnostic(d.file, d.line, d.col, "warning",
                       f"{d.message}; connection parameters are derived from securityDefinitions",
                       d.key, d.hint)
            for d in doc.diagnostics
        ]
        return None, demoted
    return doc, list(doc.diagnostics)


# --------------------------------------------------------------------------- building
