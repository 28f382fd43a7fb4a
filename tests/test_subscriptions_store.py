"""The subscriptions table: what hookd created upstream survives restarts, never leaks secrets."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hookd.store.sqlite.db import open_db
from hookd.store.sqlite.subscriptions import SubscriptionRow, SubscriptionStore, Update


def _row(sub_id: str = "ci-1", **kw: object) -> SubscriptionRow:
    base: dict[str, object] = dict(
        id=sub_id, flow="ci", fingerprint="f" * 64, connector="github",
        operation="webhook-trigger", connection="gh", scope='["github","gh",{}]',
        parameters={"owner": "o", "repo": "r"}, location=None, upstream_id=None,
        secret="s3cr3t-value", status="pending",
    )
    base.update(kw)
    return SubscriptionRow(**base)  # type: ignore[arg-type]


def test_rows_survive_reopen_and_track_status(tmp_path: Path) -> None:
    store = SubscriptionStore(open_db(tmp_path), clock=lambda: 100.0)
    store.upsert(_row())
    store.set("ci-1", status="active", location="https://api/hooks/1", upstream_id="1")
    store.conn.close()

    again = SubscriptionStore(open_db(tmp_path))
    row = again.get("ci-1")
    assert row is not None
    assert (row.status, row.location, row.upstream_id) == ("active", "https://api/hooks/1", "1")
    assert row.parameters == {"owner": "o", "repo": "r"}
    assert row.created_at == 100.0
    assert [r.id for r in again.all()] == ["ci-1"]


def test_mark_verified_for_the_server(tmp_path: Path) -> None:
    store = SubscriptionStore(open_db(tmp_path))
    store.upsert(_row())
    assert store.mark_verified("ci-1", 1234.5) is True
    assert store.mark_verified("nope", 1.0) is False
    row = store.get("ci-1")
    assert row is not None and row.verified_at == 1234.5


def test_secret_is_not_in_repr_or_public_dict(tmp_path: Path) -> None:
    row = _row()
    assert "s3cr3t" not in repr(row)
    assert "s3cr3t" not in str(row.public_dict())


def test_apply_many_is_one_transaction(tmp_path: Path) -> None:
    store = SubscriptionStore(open_db(tmp_path))
    store.upsert(_row("a"))
    with pytest.raises(sqlite3.IntegrityError):
        store.apply_many([Update("remove", "a"),
                          Update("upsert", "b", row=_row("b", status="bogus"))])
    assert [r.id for r in store.all()] == ["a"]  # the remove was rolled back


def test_unknown_field_or_status_rejected(tmp_path: Path) -> None:
    store = SubscriptionStore(open_db(tmp_path))
    store.upsert(_row())
    with pytest.raises(ValueError):
        store.set("ci-1", secret="x")
    with pytest.raises(ValueError):
        store.set("ci-1", status="gone")
