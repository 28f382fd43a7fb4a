"""Durable state: what hookd created upstream, what it received, what it ran.

`hookd.store.sqlite.db` opens the SQLite file (WAL, owner-only permissions) and applies the
versioned migrations that each part declares; the parts own their tables:

- `hookd.store.sqlite.subscriptions` — subscriptions hookd created upstream (reconciler)
- `hookd.store.sqlite.deliveries`    — the durable inbox of received notifications (server)
- `hookd.store.sqlite.runs`          — runs and step results (pipeline)
- `hookd.store.sqlite.activity`      — read-only summaries of those for the status page

Another backend (PostgreSQL, later) replaces these modules behind the same methods.
"""
