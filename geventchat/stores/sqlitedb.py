"""One SQLite database file shared by every store that keeps data on disk (``--db PATH``).

``open_database`` checks the file once (its directory, permissions, that it is an SQLite
database), turns on WAL and creates the ``schema_versions`` table; each component (room
history, accounts) then calls ``migrate`` with its own list of steps. A step is one SQL
script that brings the component from version ``i`` to ``i + 1``; a database written by a
newer server (a version this one has no step for) is refused rather than misread.

Every failure is a ``StoreError`` whose text is the one line the server prints on stderr.
The standard library's ``sqlite3`` is the engine: nothing to install, a real database
with transactions, and WAL lets a reader and the one writer work at the same time.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence

# Seconds a connection waits for another's lock before failing (two writers, e.g. the
# history writer thread and the accounts store, are rare and short).
BUSY_TIMEOUT = 10.0


class StoreError(Exception):
    """A store that cannot be used; the text is one line for the user."""


def open_database(path: str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection to the database at ``path`` (created if missing), in WAL mode, with the
    ``schema_versions`` table; raises StoreError with a one-line reason otherwise.

    Open one connection per thread that uses it (sqlite3 connections are not shared
    between threads unless ``check_same_thread=False`` and the caller serialises use).
    """
    check_path(path)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=check_same_thread)
    except sqlite3.Error as exc:
        raise StoreError(f"Error: cannot open database {path}: {exc}") from None
    try:
        # The first statement that reads the file finds out whether it is a database.
        conn.execute("PRAGMA schema_version").fetchone()
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"Error: cannot use database {path}: WAL journal mode refused ({mode})")
        # In WAL mode NORMAL never corrupts the file on a crash; the last commits may be
        # lost on power loss, which the history's one-second window already allows.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"Error: cannot use database {path}: {_reason(exc)}") from None
    except StoreError:
        conn.close()
        raise
    return conn


def schema_version(conn: sqlite3.Connection, component: str) -> int:
    """The version of ``component``'s tables in this database; 0 when it has none yet."""
    row = conn.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection, component: str, steps: Sequence[str], path: str = "") -> int:
    """Bring ``component``'s tables to version ``len(steps)``; the version reached.

    ``steps[i]`` is the SQL script from version ``i`` to ``i + 1`` (version 0 is "no
    tables yet", so ``steps[0]`` creates them). All missing steps run in one transaction:
    a crash halfway leaves the old version whole. A database whose version is above
    ``len(steps)`` comes from a newer server: StoreError, nothing touched.
    """
    target = len(steps)
    where = path or "the database"
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(conn, component)
            if current > target:
                raise StoreError(
                    f"Error: {where} holds {component} schema version {current}, newer than this server's "
                    f"({target}); use a newer geventchat or another --db"
                )
            for step in steps[current:]:
                for statement in _statements(step):
                    conn.execute(statement)
            if current != target:
                conn.execute(
                    "INSERT INTO schema_versions (component, version) VALUES (?, ?) "
                    "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                    (component, target),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"Error: cannot use database {where}: {_reason(exc)}") from None
    return target


def _statements(script: str) -> list[str]:
    """The statements of a migration step (``executescript`` would commit our transaction)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return [s for s in statements if s]


def check_path(path: str) -> None:
    """Refuse early, with a reason a user understands, what sqlite3 would refuse vaguely."""
    if not path:
        raise StoreError("Error: --db needs a file path")
    if os.path.isdir(path):
        raise StoreError(f"Error: cannot use database {path}: it is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreError(f"Error: cannot create database {path}: directory {directory} does not exist")
    if os.path.exists(path):
        if not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(f"Error: cannot use database {path}: permission denied")
    elif not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"Error: cannot create database {path}: permission denied in {directory}")
    # WAL needs the -wal and -shm files next to the database.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"Error: cannot use database {path}: directory {directory} is not writable (WAL needs it)")


def _reason(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return "not an SQLite database"
    return text
