"""Account stores: registered nicknames and their password hashes (never a password).

* ``SqliteAccountStore`` (``--db PATH``): table ``accounts`` in the shared database file,
  component ``accounts`` in ``schema_versions``. SQLite calls block, so they run on one
  thread of their own (which also owns the connection); the event loop never waits for
  the disk.
* ``RedisAccountStore`` (``--redis-url``): one hash per account, ``geventchat:account:FOLD``
  with fields ``nick``, ``hash`` and ``created``, so every process behind that Redis sees
  the same accounts (a name registered on one worker is protected on all).

Both raise ``AccountStoreError`` (a text without account data) when the store fails.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from gevent.threadpool import ThreadPool

from geventchat.chat.accounts import AccountStoreError
from geventchat.stores import sqlitedb

COMPONENT = "accounts"

# Schema steps (see sqlitedb.migrate): the hash carries its algorithm, salt and parameters.
SCHEMA = [
    """
    CREATE TABLE accounts (
        nick_key TEXT PRIMARY KEY,
        nick TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created REAL NOT NULL
    );
    """,
]

_T = TypeVar("_T")

UNAVAILABLE = "the account store is unavailable right now; try again later"


class SqliteAccountStore:
    def __init__(self, path: str) -> None:
        """Open (and create or upgrade) the accounts table; raises ``sqlitedb.StoreError``
        with a one-line reason when the file cannot be used."""
        self.path = path
        conn = sqlitedb.open_database(path)
        try:
            sqlitedb.migrate(conn, COMPONENT, SCHEMA, path)
        finally:
            conn.close()
        self._pool = ThreadPool(1)  # one thread: the connection is only ever used there
        self._conn: sqlite3.Connection | None = None

    def _run(self, func: Callable[..., _T], *args: str) -> _T:
        try:
            result: _T = self._pool.apply(self._in_thread, (func, args))
            return result
        except (sqlite3.Error, sqlitedb.StoreError):
            raise AccountStoreError(UNAVAILABLE) from None

    def _in_thread(self, func: Callable[..., _T], args: tuple[str, ...]) -> _T:
        if self._conn is None:
            self._conn = sqlitedb.open_database(self.path)
        return func(self._conn, *args)

    def get_hash(self, key: str) -> str | None:
        return self._run(_get_hash, key)

    def create(self, key: str, nick: str, password_hash: str) -> bool:
        return self._run(_create, key, nick, password_hash)

    def set_hash(self, key: str, password_hash: str) -> None:
        self._run(_set_hash, key, password_hash)

    def close(self) -> None:
        def _close(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._conn is not None:
            self._pool.apply(_close, (self._conn,))
            self._conn = None
        self._pool.kill()


def _get_hash(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT password_hash FROM accounts WHERE nick_key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def _create(conn: sqlite3.Connection, key: str, nick: str, password_hash: str) -> bool:
    cursor = conn.execute(
        "INSERT INTO accounts (nick_key, nick, password_hash, created) VALUES (?, ?, ?, ?) ON CONFLICT(nick_key) DO NOTHING",
        (key, nick, password_hash, time.time()),
    )
    return cursor.rowcount == 1


def _set_hash(conn: sqlite3.Connection, key: str, password_hash: str) -> None:
    conn.execute("UPDATE accounts SET password_hash = ? WHERE nick_key = ?", (password_hash, key))


class RedisAccountStore:
    def __init__(self, url: str, prefix: str = "geventchat") -> None:
        """A store in the Redis at ``url`` (connects on first use); raises ValueError for
        a URL redis-py cannot read."""
        import redis

        self._errors = (redis.RedisError, OSError)
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.prefix = prefix + ":account:"

    def _key(self, key: str) -> str:
        return self.prefix + key

    def get_hash(self, key: str) -> str | None:
        try:
            value = self._redis.hget(self._key(key), "hash")
        except self._errors:
            raise AccountStoreError(UNAVAILABLE) from None
        return value.decode() if value else None  # type: ignore[union-attr]  # bytes: responses are not decoded

    def create(self, key: str, nick: str, password_hash: str) -> bool:
        try:
            # HSETNX on the hash field: of two processes registering one name, one wins.
            if not self._redis.hsetnx(self._key(key), "hash", password_hash):
                return False
            self._redis.hset(self._key(key), mapping={"nick": nick, "created": repr(time.time())})
        except self._errors:
            raise AccountStoreError(UNAVAILABLE) from None
        return True

    def set_hash(self, key: str, password_hash: str) -> None:
        try:
            self._redis.hset(self._key(key), "hash", password_hash)
        except self._errors:
            raise AccountStoreError(UNAVAILABLE) from None

    def close(self) -> None:
        try:
            self._redis.close()
        except self._errors:
            pass
