"""The layering of HACKING.md, checked by import-linter against the contracts in pyproject.toml.

A package may import the packages below it and never those above; the pure core
(callbacks, subscriptions, config, templating, connectors) imports no HTTP client, no
database driver, no server and no asyncio, so `hookd check` stays fast and its decisions
are table-tested without sockets. CI runs ``lint-imports`` too; this test also shows that
the contract really catches a violation, so a contract that checks nothing cannot pass.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("importlinter", reason="import-linter is not installed (pip install -e '.[test]')")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"],
                          cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_layers_contracts_are_kept() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken", done.stdout), done.stdout


def test_the_contracts_name_every_package() -> None:
    """A new package must be placed in the layers, or nothing would check its imports."""
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [layers] = [c for c in contracts if c["type"] == "layers"]
    named = {part.strip() for layer in layers["layers"] for part in layer.replace(":", "|").split("|")}
    packages = {f"hookd.{p.name}" for p in (REPO / "hookd").iterdir()
                if (p / "__init__.py").is_file()} | {"hookd.diagnostics"}
    assert packages == named


def test_an_upward_or_io_import_breaks_a_contract(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "hookd", copy / "hookd", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    plan = copy / "hookd" / "subscriptions" / "plan.py"
    plan.write_text(plan.read_text() + "\n\ndef _f() -> None:\n    import sqlite3  # noqa\n"
                    "    from hookd.reconcile import reconciler  # noqa\n")
    done = lint_imports(copy)
    assert done.returncode != 0
    assert "hookd.subscriptions is not allowed to import hookd.reconcile" in done.stdout
    assert "hookd.subscriptions is not allowed to import sqlite3" in done.stdout or \
        "is not allowed to import sqlite3" in done.stdout
