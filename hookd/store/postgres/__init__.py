"""The PostgreSQL store: several hookd replicas share one database (docs/scale-out.md).

- `hookd.store.postgres.connection` — connections and pools with hookd's session settings
- `hookd.store.postgres.schema`     — versioned migrations under an advisory lock, and the
  check that refuses code older than the schema
- `hookd.store.postgres.meta`       — the server secret (the same on every replica)
- `hookd.store.postgres.deliveries` — the shared inbox: group-commit INSERTs, dedup as a
  unique key, claims with `FOR UPDATE SKIP LOCKED` and a lease, per-flow concurrency
- `hookd.store.postgres.wakeup`     — LISTEN/NOTIFY, so idle workers are woken, not polling
- `hookd.store.postgres.leader`     — which replica reconciles (an advisory lock held by a
  dedicated session), and the replicas' heartbeats

psycopg is imported only in this package (the layers contract in pyproject.toml).
"""
