"""The `hookd` command line as a whole: what every invocation pays before a command runs.

Every invocation builds the full parser, so every command module is imported; heavy
dependencies belong inside each command's ``func`` (see `hookd.cli`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config"
HEAVY = ("asyncio", "sqlite3", "httpx", "starlette", "uvicorn", "jinja2", "jsonschema",
         "yaml", "uuid", "hookd.model", "hookd.connector", "hookd.config", "hookd.store")


def imported_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    script = f"import sys\n{code}\nimport json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_help_imports_no_heavy_dependency() -> None:
    loaded = imported_after("import hookd.cli; hookd.cli.build_parser().format_help()")
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_check_imports_no_io_layer() -> None:
    loaded = imported_after(
        "import contextlib, io, hookd.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    assert hookd.cli.main(['check', {str(SHIPPED_CONFIG)!r}]) == 0")
    assert sorted(m for m in ("asyncio", "sqlite3", "httpx", "starlette", "uvicorn")
                  if m in loaded) == []
