"""The config reference documents every key of the JSON Schemas (as datasette does for
its settings): a key added to a schema without a line in docs/config.md fails here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "hookd" / "config" / "schemas"


def dotted_keys(schema: Any, defs: dict[str, Any], prefix: str = "", seen: frozenset[str] = frozenset()) -> Iterator[str]:
    """Every property as a dotted path (`reconcile.interval`, `http.url`), through $ref."""
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name not in seen:
            yield from dotted_keys(defs[name], defs, prefix, seen | {name})
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{key}" if prefix else key
        yield path
        # Step keys are documented relative to the step (`if`, `http.url`, `retry.delay`).
        yield from dotted_keys(sub, defs, "" if key == "steps" else path, seen)
    for combinator in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(combinator) or ():
            yield from dotted_keys(branch, defs, prefix, seen)
    if isinstance(schema.get("items"), dict):
        yield from dotted_keys(schema["items"], defs, prefix, seen)


def all_keys() -> list[str]:
    keys: set[str] = set()
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        schema = json.loads(path.read_text())
        keys.update(dotted_keys(schema, schema.get("$defs", {})))
    return sorted(keys)


def test_schemas_have_keys() -> None:
    keys = all_keys()
    assert {"public_url", "reconcile.interval", "trigger.connector", "http.url", "retry.attempts",
            "run.max_output", "parameters", "base_url"} <= set(keys)


@pytest.mark.parametrize("key", all_keys())
def test_every_schema_key_is_documented(key: str) -> None:
    """As `key` (a table row), as the parent of documented keys (`reconcile.…`), or as a
    section heading (`#### set`)."""
    pattern = rf"`{re.escape(key)}(\.[\w.]+)?`|^#+ {re.escape(key)}$"
    for doc in ("docs/config.md", "README.md"):
        text = (REPO / doc).read_text()
        assert re.search(pattern, text, re.MULTILINE), f"{key} is not documented in {doc}"


def cli_options() -> list[tuple[str, str]]:
    """(command, option) for every option of every `hookd` subcommand."""
    import argparse

    from hookd.cli.main import build_parser

    out: set[tuple[str, str]] = set()

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(f"{name} {sub_name}".strip(), sub)
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    out.add((name, option))

    walk("hookd", build_parser())
    return sorted(out)


@pytest.mark.parametrize(("command", "option"), cli_options())
def test_every_cli_option_is_in_the_readme(command: str, option: str) -> None:
    """The README's CLI reference names every flag of every command."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## CLI reference"):]
    intro = section[: section.index("| Command")]
    if command == "hookd":
        assert f"`hookd {option}`" in section
        return
    if option in ("-c", "--state"):  # shared aliases: in the intro
        assert f"`{option}`" in intro
        return
    row = next((line for line in section.splitlines() if line.startswith(f"| `{command} ")
                or line.startswith(f"| `{command}`")), None)
    assert row is not None, f"no row for `{command}` in the README's CLI reference"
    assert f"`{option}" in row, f"{command} {option} is not in its README row"


def test_shipped_files_point_editors_at_the_schemas() -> None:
    for path in sorted((REPO / "config").rglob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("=", 1)[1]).resolve()
        assert target.is_file() and target.parent == SCHEMAS, (path, target)
