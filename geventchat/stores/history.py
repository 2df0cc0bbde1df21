"""Which history store the flags choose (contract §10)."""

from __future__ import annotations

from geventchat.core.history import HistoryStore
from geventchat.stores.roommemory import DEFAULT_BUDGET_MIB, MIB
from geventchat.stores.sqlitedb import StoreError

__all__ = ["StoreError", "open_history"]


def open_history(
    keep: int, *, db: str | None = None, redis_url: str | None = None, memory: int = DEFAULT_BUDGET_MIB * MIB
) -> HistoryStore | None:
    """The store for ``--history keep`` (None when 0: history is off), on ``--db`` or
    ``--redis-url`` when given, else in memory; ``memory``: the bytes (``--history-memory``)
    its rooms' lines may hold in memory (Redis holds none: only the lines not sent yet).
    Raises StoreError (one line) when the store cannot be used."""
    if db is not None and redis_url is not None:
        raise StoreError("Error: --db and --redis-url cannot be used together (with --redis-url, history lives in Redis)")
    if keep < 1:
        return None
    if db is not None:
        from geventchat.stores.sqlite_history import SQLiteHistory

        return SQLiteHistory(db, keep, memory=memory)
    if redis_url is not None:
        from geventchat.stores.redis_history import RedisHistory

        return RedisHistory(redis_url, keep)
    from geventchat.stores.memory import MemoryHistory

    return MemoryHistory(keep, memory=memory)
