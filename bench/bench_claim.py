"""How long a worker's claim takes once the delivery store has a history.

    python bench/bench_claim.py [--history 5000] [--claims 200]

The worker claims per flow when a flow limits its concurrency
(``DeliveryStore.claim(n, flows=[name])``). Before migration 2 of "deliveries" SQLite
served that query with the (flow, id) index and walked every *finished* row of the flow
(past their 7 KB bodies) to find the queued ones, so claims slowed down as history grew.
Migration 2 adds a partial index of the queued rows.

Both are measured in the same run on the same file: ``--history`` finished 7 KB
deliveries of one flow plus one queued, then ``--claims`` rounds of claim + put back
(``finish(…, "queued")``), first with every migration (hookd today), then with the
partial index dropped (the version-1 schema, the baseline). Printed: milliseconds per
claim transaction (each commits with ``synchronous=FULL``, so it includes an fsync) and
per claim query alone, and the ratios. Exit code 0 when today's claim query is at least
10x faster than the baseline's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hookd.store.sqlite.db import open_db
from hookd.store.sqlite.deliveries import DeliveryStore, NewDelivery

QUERY = ("SELECT id FROM deliveries WHERE status = 'queued' AND flow IN (?)"
         " ORDER BY id LIMIT 1")


def fill(store: DeliveryStore, history: int) -> None:
    body = b"x" * 7000
    for start in range(0, history, 500):
        store.record_many([
            NewDelivery("sub", "flow", 1000.0 + i, {}, body)
            for i in range(start, min(start + 500, history))
        ])
    store.conn.execute("UPDATE deliveries SET status = 'done'")
    store.record_many([NewDelivery("sub", "flow", 1e9, {}, body)])


def measure(store: DeliveryStore, claims: int) -> tuple[float, float, str]:
    """Median ms per claim transaction, median ms per claim query, the query plan."""
    txn, query = [], []
    for _ in range(claims):
        start = time.perf_counter()
        (got,) = store.claim(1, flows=["flow"])
        txn.append(time.perf_counter() - start)
        store.finish(got.id, "queued")
        start = time.perf_counter()
        store.conn.execute(QUERY, ("flow",)).fetchall()
        query.append(time.perf_counter() - start)
    # A fresh statement text: the sqlite3 module caches prepared statements, and a cached
    # EXPLAIN can show the plan from before the index was dropped.
    explain = f"EXPLAIN QUERY PLAN {QUERY} -- {time.monotonic_ns()}"
    plan = " | ".join(r[3] for r in store.conn.execute(explain, ("flow",)))
    return statistics.median(txn) * 1000, statistics.median(query) * 1000, plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=5000, help="finished deliveries")
    parser.add_argument("--claims", type=int, default=200, help="claims per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = DeliveryStore(open_db(Path(tmp)))
        fill(store, args.history)
        now_txn, now_query, now_plan = measure(store, args.claims)
        store.conn.execute("DROP INDEX deliveries_queued")
        base_txn, base_query, base_plan = measure(store, args.claims)
    print(f"history: {args.history} finished 7 KB deliveries of the flow, 1 queued")
    print(f"baseline (migration 1 only): claim {base_txn:.3f} ms, query {base_query:.3f} ms"
          f"  [{base_plan}]")
    print(f"hookd (all migrations):      claim {now_txn:.3f} ms, query {now_query:.3f} ms"
          f"  [{now_plan}]")
    print(f"ratio baseline/hookd: claim {base_txn / now_txn:.1f}x, query {base_query / now_query:.0f}x")
    return 0 if base_query / now_query >= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
