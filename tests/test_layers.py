"""The layering of HACKING.md, checked: the pure core imports no I/O layer.

The pure core (config, model, checks, templating, planning, routing, signatures) is what
`hookd check` runs and what the unit tests table-test without sockets or files; an import
of the store, an HTTP client or the server from there would make both slow and the
decision code untestable without I/O. Imports under ``if TYPE_CHECKING:`` are for
annotations only and do not count. (An ``.importlinter`` contract, without the tool.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HOOKD = Path(__file__).resolve().parent.parent / "hookd"

PURE_CORE = (
    "model", "connector", "diagnostics", "config", "yamlpos", "openapi", "swagger",
    "connector_extensions", "lenientjson", "secrets", "check", "schemacheck",
    "templatecheck", "templating", "units", "desired", "plan", "tokens", "routing",
    "verify", "metrics", "payload",
)
IO_LAYERS = (
    "hookd.server", "hookd.admin", "hookd.api", "hookd.inbox", "hookd.inbox_engine",
    "hookd.worker",
    "hookd.worker_process", "hookd.pipeline", "hookd.actions", "hookd.store",
    "hookd.upstream", "hookd.reconcile", "hookd.daemon", "hookd.reload", "hookd.commands",
    "hookd.cli", "httpx", "sqlite3", "starlette", "uvicorn", "watchfiles", "apscheduler",
    "asyncio",
)
# Known, reported to the module's owner; remove an entry when it is fixed.
KNOWN: set[tuple[str, str]] = set()


def imported_modules(tree: ast.Module) -> set[str]:
    """Every module `tree` imports at run time (at any depth, not under TYPE_CHECKING)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            if node.module == "hookd":  # `from hookd import upstream`
                found.update(f"hookd.{alias.name}" for alias in node.names)
    return found


def is_io(module: str) -> bool:
    return any(module == layer or module.startswith(layer + ".") for layer in IO_LAYERS)


def violations(name: str) -> set[tuple[str, str]]:
    tree = ast.parse((HOOKD / f"{name}.py").read_text())
    return {(name, m) for m in imported_modules(tree) if is_io(m)}


@pytest.mark.parametrize("name", PURE_CORE)
def test_pure_core_imports_no_io_layer(name: str) -> None:
    assert violations(name) - KNOWN == set()


def test_known_violations_are_still_there() -> None:
    # A fixed one must leave KNOWN, or it would hide a regression.
    assert {v for name in {n for n, _ in KNOWN} for v in violations(name)} >= KNOWN


def test_the_check_finds_imports_at_any_depth_but_not_type_only_ones() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import sqlite3\n"
        "if TYPE_CHECKING:\n    from hookd.store import db\n"
        "def f():\n    from hookd import upstream\n    import httpx.x\n")
    assert sorted(m for m in imported_modules(tree) if is_io(m)) == [
        "hookd.upstream", "httpx.x", "sqlite3"]
