"""The 202 is sent only after the delivery is fsync'd: a real request to a real listener,
with the inbox's sync function replaced by one that blocks until the test lets it go.

If the sync thread stopped calling it (remove the fdatasync from
`hookd.store.sqlite.engine.Engine._sync_loop`), the request would be answered without
waiting, and this test fails: the sync is never entered, and the answer arrives while
the gate is still closed.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_server import PUSH, Hookd, Listener

HOLD = 1.0  # seconds the test keeps the sync blocked and checks that nobody was answered


class BlockingSync:
    """`datasync` for the engine: records which file it syncs, waits for `release`, then
    really syncs it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.files: list[str] = []

    def __call__(self, fd: int) -> None:
        self.files.append(os.readlink(f"/proc/self/fd/{fd}"))
        self.entered.set()
        self.gate.wait(30)
        os.fdatasync(fd)


@pytest.fixture
def listener() -> Iterator[Listener]:
    served = Listener()
    yield served
    served.close()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the fd")
def test_the_answer_waits_for_the_fsync_of_the_wal(tmp_path: Path, listener: Listener) -> None:
    sync = BlockingSync()
    hookd = Hookd(tmp_path / "state", listener=listener, inbox_options={"datasync": sync})
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(hookd.post, "push", PUSH)
            assert sync.entered.wait(10), "the inbox never synced the delivery to disk"
            with pytest.raises(concurrent.futures.TimeoutError):
                answer.result(timeout=HOLD)  # committed, not yet synced: no answer
            assert hookd.store.depth() == 1  # the row is committed (in the WAL) meanwhile
            sync.gate.set()
            response = answer.result(timeout=5)  # released: answered at once
        assert response.status_code == 202
        assert hookd.store.get(response.json()["delivery"]) is not None
        assert sync.files and all(f.endswith("hookd.db-wal") for f in sync.files), sync.files
    finally:
        sync.gate.set()
        hookd.close()
