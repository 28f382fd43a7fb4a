"""HACKING.md's map and contracts match the code: a newcomer reads that page to find where
things are, so a module renamed, moved or added without it fails here.

Checked: every dotted ``hookd.…`` name resolves (module, then attributes); every
``hookd/…`` path exists (except the made-up names of "Where a change goes", "say
`mail`"); the picture names every package and sub-package; each row of the pure core
lists exactly the modules of its package; every package's ``__init__`` says what it owns.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import hookd

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "hookd"
TEXT = (REPO / "HACKING.md").read_text(encoding="utf-8")
PICTURE = re.search(r"^## The map.*?^```\n(.*?)^```", TEXT, re.S | re.M)
DOTTED = re.compile(r"(?<![\w./])hookd(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(r"(?<![\w./])hookd/[\w/.*-]+")
# "A new action (…), say `mail`", "say `hmac-sha1`", "say `hookd export`": examples.
EXAMPLES = {name.split()[-1].replace("-", "_")
            for name in re.findall(r"\bsay `([^`]+)`", TEXT)}
# A pure core row: "   config/         model, actions/ (one module per step kind), loader,"
# and its continuation lines; "a/ | b" rows list each sibling's parts, "… | …" alike.
ROW = re.compile(r"^ {3}(\w+/?(?: \| \w+/?)*) {2,}(.*)$")


def packages() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(hookd.__path__, "hookd.") if m.ispkg]


def resolve(dotted: str) -> str | None:
    """None when `dotted` is a module, or a module and attributes of it; else what is wrong."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            target: object = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # not a module (yet): an attribute of a shorter prefix
            raise
        for attr in parts[cut:]:
            if not hasattr(target, attr):
                return f"{name} has no {'.'.join(parts[cut:])}"
            target = getattr(target, attr)
        return None
    return "no such module"


def test_every_dotted_name_resolves() -> None:
    names = sorted(set(DOTTED.findall(TEXT)))
    assert len(names) > 40  # the contracts section, not an empty match
    wrong = {name: problem for name in names if (problem := resolve(name))}
    assert not wrong, f"HACKING.md names what the code does not have: {wrong}"


def test_every_path_exists() -> None:
    paths = sorted(set(PATH.findall(TEXT)))
    assert paths
    missing = [p for p in paths
               if Path(p.rstrip("/.")).stem.replace("-", "_") not in EXAMPLES
               and not any(REPO.glob(p.rstrip("/.")))]
    assert not missing, f"HACKING.md names files that do not exist: {missing}"


def test_the_picture_names_every_package() -> None:
    assert PICTURE is not None, "HACKING.md has no picture under '## The map'"
    drawn = set(re.findall(r"(\w+)/", PICTURE[1]))
    absent = [p for p in packages() if p.rsplit(".", 1)[-1] not in drawn]
    assert not absent, f"packages missing from HACKING.md's picture: {absent}"
    top = {p.removeprefix("hookd.") for p in packages() if p.count(".") == 1}
    tops_drawn = {name for name in drawn if (PACKAGE / name).is_dir()}
    assert tops_drawn <= top | {"schemas", "builtin"}, tops_drawn - top  # nothing made up


def core_rows() -> dict[str, str]:
    """{package or module name: what its pure core row lists} from the picture."""
    assert PICTURE is not None
    rows: dict[str, list[str]] = {}
    current: list[str] = []
    for line in PICTURE[1].split("pure core", 1)[1].splitlines()[1:]:
        match = ROW.match(line)
        if match:
            names = [n.strip() for n in match[1].split("|")]
            parts = [p.strip() for p in match[2].split("|")]
            assert len(names) == len(parts), line
            current = []
            for name, part in zip(names, parts, strict=True):
                rows[name] = [part]
                current.append(name)
        elif line.strip() and len(current) == 1:
            rows[current[0]].append(line.strip())
    return {name: " ".join(parts) for name, parts in rows.items()}


def listed(row: str) -> set[str]:
    """The module names a row lists: ``verify + schemes/ (one module …), payload`` →
    verify, schemes, payload."""
    without_notes = re.sub(r"\([^)]*\)", "", row)
    return {re.split(r"[/ ]", item.strip())[0] for item in re.split(r"[,+]", without_notes)
            if item.strip()}


def test_each_pure_core_row_lists_its_package() -> None:
    rows = core_rows()
    assert {"config/", "connectors/", "templating/", "callbacks/"} <= set(rows)
    problems = []
    for name, row in rows.items():
        if not name.endswith("/"):  # a module (diagnostics): its row names what it defines
            module = importlib.import_module(f"hookd.{name}")
            problems += [f"hookd.{name} has no {n}" for n in listed(row)
                         if not hasattr(module, n)]
            continue
        directory = PACKAGE / name.rstrip("/")
        there = {p.stem for p in directory.glob("*.py") if p.stem != "__init__"}
        there |= {p.name for p in directory.iterdir() if p.is_dir() and p.name != "__pycache__"}
        shown = listed(row)
        problems += [f"{name} row lists {n}, which is not there" for n in sorted(shown - there)]
        problems += [f"{name} row does not list {n}" for n in sorted(there - shown)]
    assert not problems, "HACKING.md's pure core rows:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", packages())
def test_every_package_says_what_it_owns(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    doc = (module.__doc__ or "").strip()
    first = doc.split("\n\n", 1)[0]
    assert len(first.split()) >= 5 and first.rstrip().endswith((".", ")")), (
        f"{name}/__init__.py needs a docstring whose first paragraph says what the package "
        f"owns; it has {first!r}")
