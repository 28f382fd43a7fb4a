"""The store is reached through its interface only: no module outside `hookd/store/`
imports ``sqlite3`` or holds SQL, so that another backend replaces SQLite without changing
a caller (HACKING.md, "A new store backend")."""

from __future__ import annotations

import re
from pathlib import Path

HOOKD = Path(__file__).resolve().parent.parent / "hookd"
SQL = re.compile(r"\bimport sqlite3\b|\bfrom sqlite3\b|\bPRAGMA\b|\bSELECT\b[^\n]*\bFROM\b"
                 r"|\bINSERT\s+INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b|\bBEGIN\s+IMMEDIATE\b")


def outside_the_store() -> list[Path]:
    return [p for p in sorted(HOOKD.rglob("*.py")) if HOOKD / "store" not in p.parents]


def test_no_sqlite_or_sql_outside_the_store() -> None:
    found = [f"{p.relative_to(HOOKD.parent)}:{n}: {line.strip()}"
             for p in outside_the_store()
             for n, line in enumerate(p.read_text().splitlines(), 1) if SQL.search(line)]
    assert found == []


def test_the_check_finds_what_it_looks_for() -> None:
    assert SQL.search("    import sqlite3")
    assert SQL.search('conn.execute("SELECT status, count(*) FROM runs")')
    assert SQL.search('"UPDATE deliveries SET status = ?"')
    assert not SQL.search("the store selects from its rows")
    assert len(outside_the_store()) > 50
