"""The shared SQLite opener (stores/sqlitedb.py) on real files in a temporary directory."""

import sqlite3

import pytest

from geventchat.stores import sqlitedb

STEPS = ["CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL);", "CREATE INDEX things_name ON things (name);"]


def test_creates_the_file_in_wal_mode_with_the_versions_table(tmp_path):
    path = str(tmp_path / "chat.db")
    conn = sqlitedb.open_database(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sqlitedb.schema_version(conn, "things") == 0
    assert sqlitedb.migrate(conn, "things", STEPS[:1], path) == 1
    conn.execute("INSERT INTO things (name) VALUES ('a')")
    conn.close()
    again = sqlitedb.open_database(path)
    assert sqlitedb.schema_version(again, "things") == 1
    assert sqlitedb.migrate(again, "things", STEPS, path) == 2  # one step more: migrated, data kept
    assert again.execute("SELECT name FROM things").fetchall() == [("a",)]
    assert again.execute("SELECT name FROM sqlite_master WHERE name = 'things_name'").fetchone() is not None


def test_two_components_share_one_file(tmp_path):
    path = str(tmp_path / "chat.db")
    first, second = sqlitedb.open_database(path), sqlitedb.open_database(path)
    sqlitedb.migrate(first, "history", STEPS[:1], path)
    sqlitedb.migrate(second, "accounts", ["CREATE TABLE accounts (nick TEXT PRIMARY KEY);"], path)
    rows = dict(first.execute("SELECT component, version FROM schema_versions").fetchall())
    assert rows == {"history": 1, "accounts": 1}


def test_a_newer_schema_is_refused_untouched(tmp_path):
    path = str(tmp_path / "chat.db")
    conn = sqlitedb.open_database(path)
    sqlitedb.migrate(conn, "things", STEPS, path)
    with pytest.raises(sqlitedb.StoreError, match=r"schema version 2, newer than this server's \(1\)"):
        sqlitedb.migrate(conn, "things", STEPS[:1], path)
    assert sqlitedb.schema_version(conn, "things") == 2


def test_a_failed_step_leaves_the_old_version_whole(tmp_path):
    path = str(tmp_path / "chat.db")
    conn = sqlitedb.open_database(path)
    sqlitedb.migrate(conn, "things", STEPS[:1], path)
    with pytest.raises(sqlitedb.StoreError):
        sqlitedb.migrate(conn, "things", [STEPS[0], "CREATE TABLE extra (x);\nNOT SQL AT ALL;"], path)
    assert sqlitedb.schema_version(conn, "things") == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchone() is None


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: str(d / "missing" / "chat.db"), "does not exist"),
        (lambda d: str(d), "it is a directory"),
        (
            lambda d: (d / "junk.db").write_bytes(b"this is not a database\n" * 200) and str(d / "junk.db"),
            "not an SQLite database",
        ),
    ],
)
def test_unusable_paths_are_one_line(tmp_path, make, reason):
    with pytest.raises(sqlitedb.StoreError) as refused:
        sqlitedb.open_database(make(tmp_path))
    assert reason in str(refused.value) and "\n" not in str(refused.value)
    assert str(refused.value).startswith("Error: ")


def test_statements_split_like_sqlite():
    assert sqlitedb._statements("CREATE TABLE a (x TEXT DEFAULT ';');\nCREATE INDEX i ON a (x);\n") == [
        "CREATE TABLE a (x TEXT DEFAULT ';');",
        "CREATE INDEX i ON a (x);",
    ]
    assert isinstance(sqlite3.sqlite_version, str)
