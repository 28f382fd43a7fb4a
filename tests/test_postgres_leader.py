"""One leader among replicas, a fast takeover when it dies, the replicas' list, and the
shared server secret (hookd.store.postgres.leader, .replicas, .meta)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hookd.store.postgres import connection, meta, replicas, schema
from hookd.store.postgres.leader import Leadership


async def migrated(url: str) -> None:
    async with await connection.connect(url) as conn:
        await schema.migrate(conn)


async def until(condition, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def test_replicas_starting_together_elect_exactly_one_and_another_takes_over(
        postgres_url: str) -> None:
    async def go() -> None:
        await migrated(postgres_url)
        elected: list[str] = []
        campaigns = [Leadership(postgres_url, name=f"r{n}", retry=0.1, check=0.1,
                                on_elected=lambda n=n: elected.append(f"r{n}"))
                     for n in range(3)]
        for c in campaigns:
            c.start()
        await until(lambda: any(c.leading for c in campaigns), 10, "a leader")
        await asyncio.sleep(0.5)  # several rounds of the others' attempts
        assert [c.leading for c in campaigns].count(True) == 1
        assert len(elected) == 1
        first = next(c for c in campaigns if c.leading)
        async with await connection.connect(postgres_url) as conn:
            assert await replicas.leader_name(conn) == first.name
            # The leader's session dies (as when its process is killed): the lock is free.
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                               " WHERE application_name = %s", (first.name,))
        await until(lambda: not first.leading, 5, "the old leader to notice")
        await until(lambda: len(elected) == 2, 5, "a new leader")
        leaders = [c for c in campaigns if c.leading]
        assert len(leaders) == 1
        for c in campaigns:
            await c.aclose()

    asyncio.run(go())


LEADER_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from hookd.store.postgres.leader import Leadership

    async def main():
        c = Leadership(sys.argv[1], name=sys.argv[2], retry=0.5,
                       on_elected=lambda: print("leading", flush=True))
        c.start()
        await asyncio.Event().wait()

    asyncio.run(main())
""")


def test_kill_9_of_the_leaders_process_hands_the_lead_over_within_seconds(
        postgres_url: str, tmp_path: Path) -> None:
    asyncio.run(migrated(postgres_url))
    script = tmp_path / "leader.py"
    script.write_text(LEADER_SCRIPT)
    outputs = [tmp_path / f"p{n}.out" for n in range(2)]
    procs = [subprocess.Popen([sys.executable, str(script), postgres_url, f"p{n}"],
                              stdout=out.open("w"), env={**os.environ})
             for n, out in enumerate(outputs)]
    try:
        def leading() -> list[int]:
            return [i for i, out in enumerate(outputs) if "leading" in out.read_text()]

        deadline = time.monotonic() + 20
        first: list[int] = []
        while not first and time.monotonic() < deadline:
            first = leading()
            time.sleep(0.05)
        assert len(first) == 1, "exactly one process leads"
        procs[first[0]].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        other = 1 - first[0]
        while time.monotonic() - killed < 15:
            if other in leading():
                break
            time.sleep(0.05)
        else:
            pytest.fail("no takeover within 15 s of the leader's kill -9")
        assert time.monotonic() - killed < 15
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_status_lists_the_replicas_and_which_one_leads(postgres_url: str) -> None:
    async def go() -> list[replicas.Replica]:
        await migrated(postgres_url)
        lead = Leadership(postgres_url, name="replica-b", retry=0.1)
        lead.start()
        await until(lambda: lead.leading, 10, "the leader")
        async with await connection.connect(postgres_url) as conn:
            await replicas.heartbeat(conn, "replica-a")
            await replicas.heartbeat(conn, "replica-b")
            await replicas.heartbeat(conn, "replica-b")  # again: one row
            listed = await replicas.listing(conn)
            await replicas.leave(conn, "replica-a")
            assert [r.name for r in await replicas.listing(conn)] == ["replica-b"]
        await lead.aclose()
        return listed

    listed = asyncio.run(go())
    assert sorted(r.name for r in listed) == ["replica-a", "replica-b"]
    assert [r.name for r in listed if r.leader] == ["replica-b"]
    assert all(r.pid == os.getpid() and r.alive and r.version for r in listed)


def test_replicas_starting_together_share_one_server_secret(postgres_url: str) -> None:
    async def one() -> bytes:
        async with await connection.connect(postgres_url) as conn, conn.transaction():
            return await meta.load_or_create_server_secret(conn)

    async def go() -> list[bytes]:
        await migrated(postgres_url)
        return list(await asyncio.gather(*(one() for _ in range(4))))

    secrets = asyncio.run(go())
    assert len(set(secrets)) == 1 and len(secrets[0]) == meta.SECRET_BYTES
