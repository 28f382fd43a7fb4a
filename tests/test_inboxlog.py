"""hookd.inboxlog: frames survive a round trip; a cut-off or damaged tail ends a segment."""

from __future__ import annotations

import os
from pathlib import Path

from hookd import inboxlog
from hookd.store.deliveries import NewDelivery, prepare


def _rows(n: int) -> list[inboxlog.PreparedRow]:
    return [prepare(NewDelivery("sub", "flow", 1000.0 + i, {"x-id": str(i)}, b'{"n": %d}' % i,
                                event="push", dedup_key=f"sub:{i}", flags=("schema-warning",),
                                item=i or None)) for i in range(n)]


def test_rows_round_trip() -> None:
    rows = _rows(3)
    data = inboxlog.encode(rows)
    assert inboxlog.decode(data) == (rows, len(data))


def test_a_cut_off_or_damaged_frame_ends_the_segment() -> None:
    rows = _rows(3)
    data = inboxlog.encode(rows)
    two = len(inboxlog.encode(rows[:2]))
    assert inboxlog.decode(data[:-1]) == (rows[:2], two)  # torn write at the crash
    damaged = bytearray(data)
    damaged[-2] ^= 0xFF  # a flipped bit in the last body
    assert inboxlog.decode(bytes(damaged)) == (rows[:2], two)
    assert inboxlog.decode(b"junk" + data) == ([], 0)


def test_segments_are_private_and_locked(tmp_path: Path) -> None:
    segment = inboxlog.create(tmp_path / "inbox")
    try:
        assert os.stat(segment.path).st_mode & 0o777 == 0o600
        assert os.stat(tmp_path / "inbox").st_mode & 0o777 == 0o700
        assert list(inboxlog.orphans(tmp_path / "inbox")) == []  # its writer holds it
        segment.append(inboxlog.encode(_rows(2)))
        start = segment.size
        segment.append(b"x" * 10)
        segment.truncate(start)  # a batch SQLite refused
        assert segment.path.stat().st_size == start
    finally:
        inboxlog.retire(segment)
    assert not segment.path.exists()
