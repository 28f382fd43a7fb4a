"""What can go wrong in the store, in the caller's terms (never a backend's exception).

Every backend raises these and only these from its interface methods (`hookd.store.interface`),
so that a caller handles "no such run" or "the store cannot write now" once, whatever the
store is. The HTTP layer chooses the status code (`hookd.admin.api`, `hookd.ingest.app`),
the CLI its exit code and message: the store knows nothing of either.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's errors; the message is for the operator (no secrets)."""


class NotFound(StoreError):
    """The record asked for does not exist (an unknown run or delivery id)."""


class Conflict(StoreError):
    """The record is not in a state that allows the change (replaying a queued delivery)."""


class Gone(StoreError):
    """The record existed and was removed (a run whose delivery retention pruned)."""


class Unavailable(StoreError):
    """The store cannot do this now (disk full, write lock held too long, closed): try
    again later. Nothing was changed."""


class Busy(Unavailable):
    """Another writer held the store's lock longer than the store waits (`LOCK_WAIT`)."""


# The longest any store call waits for another writer before raising `Busy`, in seconds
# (README: "answered 503 within 10 seconds"). Backends bound their lock waits by it.
LOCK_WAIT = 10.0
