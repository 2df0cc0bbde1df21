"""Which account store the server uses: ``--db PATH`` (SQLite) or ``--redis-url`` (Redis);
none otherwise (the account commands then say that they need one)."""

from __future__ import annotations

import argparse

from geventchat.chat.accounts import Accounts
from geventchat.chat.stats import Stats


def open_accounts(args: argparse.Namespace, stats: Stats | None = None) -> Accounts | None:
    """The account service for these flags, or None; raises ``sqlitedb.StoreError`` (one
    line for stderr) when ``--db`` cannot be used. ``stats``: where it counts (the
    server's, once it exists)."""
    stats = stats or Stats()
    db = getattr(args, "db", None)
    if db:
        from geventchat.stores.accounts import SqliteAccountStore

        return Accounts(SqliteAccountStore(db), stats)
    if args.redis_url:
        from geventchat.stores.accounts import RedisAccountStore

        return Accounts(RedisAccountStore(args.redis_url), stats)
    return None
