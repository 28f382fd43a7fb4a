"""What every part of the connector builder shares: the documents, the resolver, the
diagnostics.

The builder is split by what it reads (`hookd.connectors.builder` the operations,
`hookd.connectors.triggers` the webhook triggers, `hookd.connectors.strategies` their
delete/list/update operations, `hookd.connectors.apiproperties` the ways to connect and
the policy templates); each part is a class on `SpecReader`, so a problem found anywhere
becomes a `Diagnostic` with file:line:col in the one list the builder returns.
"""

from __future__ import annotations

from typing import Any

from hookd.connectors import extensions as ext
from hookd.connectors import refs as swagger
from hookd.connectors.documents import Document
from hookd.diagnostics import Diagnostic, Severity

KeyPath = tuple[str | int, ...]


def _ignore_bad_ref(ref: str, message: str, hint: str) -> None:
    return None


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is an object, else empty: real specs put anything anywhere."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """`value` when it is an array, else empty."""
    return value if isinstance(value, list) else []


class SpecReader:
    """The spec and apiProperties.json being read, their `$ref` resolver and the
    diagnostics so far; the base of the builder's parts."""

    def __init__(self, name: str, spec: Document, properties: Document | None, builtin: bool) -> None:
        self.name = name
        self.spec = spec
        self.file = spec.file
        self.properties = properties
        self.builtin = builtin
        self.diags: list[Diagnostic] = []
        self.resolver = swagger.Resolver(spec.value, self._bad_ref)
        self.raw_ops: dict[str, tuple[KeyPath, dict[str, Any], dict[str, Any]]] = {}
        self.set_paths: dict[str, KeyPath] = {}  # parameter set name → its parameters' path

    def release(self) -> None:
        """Break the builder -> resolver -> builder cycle (the resolver reports through a
        bound method): without it, each connector's whole raw spec stays alive until the
        next GC run, and loading pauses the GC: 70 MB more for the corpus, and the page
        faults and cache misses that go with it."""
        self.resolver.report = _ignore_bad_ref

    # ------------------------------------------------------------------ reporting

    def _bad_ref(self, ref: str, message: str, hint: str) -> None:
        line, col = self.spec.find(f'"{ref}"')
        if not line:  # YAML: the reference may be unquoted or single-quoted
            line, col = self.spec.find(ref)
        self.diags.append(Diagnostic(self.file, line, col, "warning", message, hint=hint))

    def diag(self, severity: Severity, message: str, path: KeyPath, hint: str = "",
             doc: Document | None = None) -> None:
        doc = doc or self.spec
        line, col = doc.locate(path) if path else (0, 0)
        self.diags.append(Diagnostic(doc.file, line, col, severity, message, swagger.key_path(path), hint))

    def report(self, problems: ext.Problems, where: KeyPath) -> None:
        for sub, message, hint in problems:
            self.diag("error", message, (*where, *sub), hint)
        problems.clear()
