"""History (contract §10), black-box: real server processes, real sockets, a real SQLite
file on disk and a real redis-server for the cluster case."""

from __future__ import annotations

import calendar
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest
from conftest import ROOT, WELCOME_RE, ChatClient, run_server_command, server_command
from redis_fixture import redis_server  # noqa: F401  (fixture)
from test_metrics import metrics_port, scrape, wait_metric

from geventchat.stores import sqlitedb
from geventchat.stores.sqlite_history import COMPONENT, SCHEMA_STEPS

# The default replay (the test servers of other features turn it off: conftest.py).
ON_JOIN = ("--history-on-join", "20")
LINE_RE = re.compile(r"^\*\*\* \[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] (.*)$")
END = "*** End of recent messages"


def read_block(client: ChatClient, room: str, head: str | None = None) -> list[str]:
    """The next lines (after ``head``, the first one when read already) must be a block
    for ``room``; its lines without their time stamps (each time checked: UTC, the last
    minute)."""
    head = client.line() if head is None else head
    match = re.fullmatch(rf"\*\*\* Recent messages in {re.escape(room)} \((\d+)\):", head)
    assert match, f"not a block start: {head!r}"
    body = []
    for _ in range(int(match.group(1))):
        line = client.line()
        parsed = LINE_RE.match(line)
        assert parsed, f"not a block line: {line!r}"
        stamp = calendar.timegm(time.strptime(parsed.group(1), "%Y-%m-%d %H:%M:%S"))
        assert abs(stamp - time.time()) < 120, f"not the UTC time of relay: {line!r}"
        body.append(parsed.group(2))
    assert client.line() == END
    return body


def talk(sender: ChatClient, listener: ChatClient, *lines: str) -> None:
    """``sender`` says ``lines``; ``listener`` (in the same room) has received them all."""
    sender.send(*lines)
    for line in lines:
        listener.expect(line[4:] if line.startswith("/me ") and False else _as_relayed(sender.nick, line))


def _as_relayed(nick: str, line: str) -> str:
    if line.startswith("/me "):
        return f"* {nick} {line[4:]}"
    return f"{nick}: {line[1:] if line.startswith('//') else line}"


def test_newcomer_gets_the_last_20_lines_after_the_welcome(start_server, clients):
    server = start_server("--history", "1000", "--no-presence")
    alice, bob = clients(server), clients(server)
    talk(alice, bob, *[f"line {i}" for i in range(25)], "/me waves", "//slash")
    carol = clients(server)  # the welcome was read by the client; the block comes next
    assert read_block(carol, "lobby") == [f"{alice.nick}: line {i}" for i in range(7, 25)] + [
        f"* {alice.nick} waves",
        f"{alice.nick}: /slash",
    ]
    carol.expect_nothing()
    talk(alice, carol, "after")  # live lines are plain lines again
    carol.send("/history 3")
    assert read_block(carol, "lobby") == [f"* {alice.nick} waves", f"{alice.nick}: /slash", f"{alice.nick}: after"]


def test_an_empty_room_sends_no_block_and_join_replays_after_its_reply(start_server, clients):
    server = start_server("--history-on-join", "2", "--no-presence")
    alice = clients(server)
    alice.expect_nothing()  # lobby is empty: no block at all
    alice.send("/join blue")
    alice.expect("*** You are now in blue")
    alice.expect_nothing()
    bob = clients(server)
    bob.send("/join BLUE")
    bob.expect("*** You are now in blue")
    bob.expect_nothing()
    talk(alice, bob, "one", "two", "three")
    carol = clients(server)
    carol.expect_nothing()  # lobby still has nothing
    carol.send("/join Blue")
    carol.expect("*** You are now in blue")
    assert read_block(carol, "blue") == [f"{alice.nick}: two", f"{alice.nick}: three"]
    carol.send("/history")
    assert read_block(carol, "blue") == [f"{alice.nick}: one", f"{alice.nick}: two", f"{alice.nick}: three"]
    carol.send("/join lobby", "/history")
    carol.expect("*** You are now in lobby", "*** No messages in lobby yet")


def test_history_on_join_0_sends_none_but_history_answers(start_server, clients):
    server = start_server("--history-on-join", "0", "--history", "1000", "--no-presence")
    alice, bob = clients(server), clients(server)
    talk(alice, bob, "hello")
    carol = clients(server)
    carol.expect_nothing()
    carol.send("/history")
    assert read_block(carol, "lobby") == [f"{alice.nick}: hello"]


def test_history_bounds_and_errors(start_server, clients):
    server = start_server("--history", "600", "--history-on-join", "0", "--no-presence")
    alice, bob = clients(server), clients(server)
    bob.send("/history")
    bob.expect("*** No messages in lobby yet")
    talk(alice, bob, *[f"m{i}" for i in range(650)])
    bob.send("/history 2")
    assert read_block(bob, "lobby") == [f"{alice.nick}: m648", f"{alice.nick}: m649"]
    bob.send("/history")
    assert read_block(bob, "lobby") == [f"{alice.nick}: m{i}" for i in range(630, 650)]
    bob.send("/history 100000000000000000000")  # above 500: taken as 500
    assert read_block(bob, "lobby") == [f"{alice.nick}: m{i}" for i in range(150, 650)]
    for bad in ("0", "-3", "x", "2.5", "1 2", "٣"):
        bob.send(f"/history {bad}")
        bob.expect("*** Error: usage: /history [N]")


def test_history_keeps_at_most_n_per_room(start_server, clients):
    server = start_server("--history", "3", "--no-presence")
    alice, bob = clients(server), clients(server)
    talk(alice, bob, "a", "b", "c", "d", "e")
    bob.send("/history 50")
    assert read_block(bob, "lobby") == [f"{alice.nick}: c", f"{alice.nick}: d", f"{alice.nick}: e"]


def test_history_0_turns_it_off(start_server, clients):
    server = start_server("--history", "0", "--no-presence")
    alice, bob = clients(server), clients(server)
    talk(alice, bob, "not kept")
    carol = clients(server)
    carol.expect_nothing()
    for line in ("/history", "/history 5", "/history x"):
        carol.send(line)
        carol.expect("*** Error: history is turned off on this server")


def test_private_presence_and_replies_are_never_kept(start_server, clients):
    server = start_server("--history", "1000")
    alice = clients(server)
    bob = clients(server)
    alice.expect(f"*** {bob.nick} joined lobby")
    alice.send(f"/msg {bob.nick} a secret", "/who", "/rooms", "/help", "/nick alice2", "/unknowncmd")
    bob.until(lambda line: line == "*** 51044 is now known as alice2".replace("51044", alice.nick))
    bob.send("/join elsewhere", "/join lobby")
    bob.until(lambda line: line == "*** You are now in lobby")
    bob.expect_nothing()  # nothing kept in lobby: no block
    alice.send("kept \x1b[31mred\x07")
    bob.expect("alice2: kept [31mred")
    carol = clients(server)
    assert read_block(carol, "lobby") == ["alice2: kept [31mred"]


# ------------------------------------------------------------------------------ SQLite


def db_lines(path) -> list[str]:
    """Every line in the database, in order, as ``NICK: text`` (a row holds a run of lines
    recorded together, joined by newlines: stores/runs.py)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT nick, lines, text FROM history ORDER BY id").fetchall()
    out = []
    for nick, count, text in rows:
        lines = text.split("\n")
        assert len(lines) == count
        out += [f"{nick}: {line}" for line in lines]
    return out


def test_sqlite_keeps_history_across_a_restart(start_server, clients, tmp_path):
    path = str(tmp_path / "chat.db")
    server = start_server("--db", path, "--no-presence", *ON_JOIN)
    alice, bob = clients(server), clients(server)
    bob.send("/join blue")
    bob.expect("*** You are now in blue")
    alice.send("/join blue")
    alice.expect("*** You are now in blue")
    talk(alice, bob, "before the restart", "/me leaves")
    alice.send("/join red")
    alice.expect("*** You are now in red")
    alice.send("red line")
    alice.sync()
    assert server.stop() == 0  # SIGTERM: pending lines are written before "Server stopped"
    assert db_lines(path) == [f"{alice.nick}: before the restart", f"{alice.nick}: leaves", f"{alice.nick}: red line"]
    again = start_server("--db", path, "--no-presence", *ON_JOIN)
    carol = clients(again)
    carol.expect_nothing()
    carol.send("/join blue")
    carol.expect("*** You are now in blue")
    assert read_block(carol, "blue") == [f"{alice.nick}: before the restart", f"* {alice.nick} leaves"]
    carol.send("/join red")
    carol.expect("*** You are now in red")
    assert read_block(carol, "red") == [f"{alice.nick}: red line"]
    talk(carol, ChatClient(again.port), "x") if False else None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_versions WHERE component = 'history'").fetchone() == (2,)


def test_a_long_history_from_the_file_and_the_queue_is_whole_and_in_order(start_server, clients, tmp_path):
    server = start_server("--db", str(tmp_path / "chat.db"), "--no-presence", "--quiet")
    alice, bob, carol = clients(server), clients(server), clients(server)
    talk(alice, carol, *[f"a{i}" for i in range(150)])
    talk(bob, carol, *[f"b{i}" for i in range(150)])
    time.sleep(1.2)  # written to the file by now (the contract's second)
    talk(alice, carol, *[f"c{i}" for i in range(150)])
    carol.send("/history 400")  # right away: the newest lines may still be queued
    got = read_block(carol, "lobby")
    assert got == [f"{alice.nick}: a{i}" for i in range(50, 150)] + [f"{bob.nick}: b{i}" for i in range(150)] + [
        f"{alice.nick}: c{i}" for i in range(150)
    ]


def test_sigterm_right_after_a_burst_loses_nothing(start_server, clients, tmp_path):
    path = str(tmp_path / "chat.db")
    server = start_server("--db", path, "--history", "5000", "--no-presence", "--quiet")
    alice, bob = clients(server), clients(server)
    lines = [f"burst {i}" for i in range(3000)]
    talk(alice, bob, *lines)
    server.signal(signal.SIGTERM)
    assert server.wait(10) == 0
    assert any(line.endswith("Server stopped") for line in server.stdout_lines())
    assert db_lines(path) == [f"{alice.nick}: {line}" for line in lines]


def test_kill_9_keeps_what_was_relayed_over_a_second_earlier(start_server, clients, tmp_path):
    path = str(tmp_path / "chat.db")
    server = start_server("--db", path, "--no-presence", "--quiet", *ON_JOIN)
    alice, bob = clients(server), clients(server)
    early = [f"early {i}" for i in range(500)]
    talk(alice, bob, *early)
    relayed_at = time.monotonic()
    # The contract's window is one second: wait it out (this wait is what is tested).
    time.sleep(max(0.0, relayed_at + 1.2 - time.monotonic()))
    talk(alice, bob, *[f"late {i}" for i in range(200)])
    server.kill()
    kept = db_lines(path)
    assert kept[: len(early)] == [f"{alice.nick}: {line}" for line in early]
    assert all(line.startswith(f"{alice.nick}: late ") for line in kept[len(early) :])
    # The file is whole: a new server opens it and replays from it.
    again = start_server("--db", path, "--no-presence", *ON_JOIN)
    carol = clients(again)
    assert read_block(carol, "lobby")[-1] == kept[-1]


def _refused(*args: str, as_nobody: bool = False) -> str:
    result = _run_without_override(*args) if as_nobody else run_server_command("--port", "0", *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _run_without_override(*args: str) -> subprocess.CompletedProcess:
    """The server without the power to ignore file permissions (root's DAC override is
    dropped from its capability bounding set), as any user who does not own the file."""
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file permissions cannot be tested")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    return subprocess.run(
        prefix + server_command("--port", "0", *args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )


def test_unusable_db_paths_are_one_line_and_exit_non_zero(tmp_path):
    assert "does not exist" in _refused("--db", str(tmp_path / "missing" / "chat.db"))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all\n" * 100)
    assert "not an SQLite database" in _refused("--db", str(junk))
    assert junk.read_bytes() == b"not a database at all\n" * 100  # untouched
    assert "directory" in _refused("--db", str(tmp_path))
    assert "cannot be used together" in _refused("--db", str(tmp_path / "x.db"), "--redis-url", "redis://127.0.0.1:1/0")


def test_a_db_without_permission_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "chat.db").write_bytes(b"")
    os.chmod(locked / "chat.db", 0o400)
    os.chmod(locked, 0o555)
    os.chmod(tmp_path, 0o755)
    assert "permission denied" in _refused("--db", str(locked / "chat.db"), as_nobody=True)
    assert "permission denied" in _refused("--db", str(locked / "new.db"), as_nobody=True)


def test_a_version_1_database_is_migrated_with_its_lines(start_server, clients, tmp_path):
    path = str(tmp_path / "chat.db")
    conn = sqlitedb.open_database(path)
    sqlitedb.migrate(conn, COMPONENT, SCHEMA_STEPS[:1], path)  # as the first release wrote it
    conn.executemany(
        "INSERT INTO history (id, room_key, time, nick, text, action) VALUES (?, ?, ?, ?, ?, ?)",
        [(1, "lobby", time.time(), "old", "from version 1", 0), (2, "lobby", time.time(), "old", "waves", 1)],
    )
    conn.close()
    server = start_server("--db", path, "--no-presence", *ON_JOIN)
    alice = clients(server)
    assert read_block(alice, "lobby") == ["old: from version 1", "* old waves"]
    bob = clients(server)
    read_block(bob, "lobby")
    talk(alice, bob, "new")
    assert server.stop() == 0
    assert db_lines(path) == ["old: from version 1", "old: waves", f"{alice.nick}: new"]
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT version FROM schema_versions WHERE component = 'history'").fetchone() == (2,)


def test_a_db_from_a_newer_server_is_refused_untouched(tmp_path):
    path = str(tmp_path / "chat.db")
    conn = sqlitedb.open_database(path)
    conn.execute("INSERT INTO schema_versions (component, version) VALUES (?, 99)", (COMPONENT,))
    conn.close()
    line = _refused("--db", path)
    assert "schema version 99, newer than this server's" in line
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT version FROM schema_versions WHERE component = 'history'").fetchone() == (99,)
        assert check.execute("SELECT name FROM sqlite_master WHERE name = 'history'").fetchone() is None


def test_a_db_in_use_by_another_server_is_refused(start_server, tmp_path):
    path = str(tmp_path / "chat.db")
    start_server("--db", path)
    assert "in use by another server" in _refused("--db", path)


# ------------------------------------------------------------------------------- Redis


def test_cluster_members_on_another_process_see_the_same_history(start_server, clients, redis_server):  # noqa: F811
    first = start_server("--redis-url", redis_server.url, "--no-presence", *ON_JOIN)
    second = start_server("--redis-url", redis_server.url, "--no-presence", *ON_JOIN)
    alice, bob = clients(first), clients(second)
    talk(alice, bob, *[f"a{i}" for i in range(30)])
    talk(bob, alice, *[f"b{i}" for i in range(30)])
    alice.send(*[f"c{i}" for i in range(30)])
    bob.send(*[f"d{i}" for i in range(30)])
    alice.until(lambda line: line == f"{bob.nick}: d29")
    bob.until(lambda line: line == f"{alice.nick}: c29")
    carol = ChatClient(second.port, welcome=False)
    try:
        assert WELCOME_RE.match(carol.line())
        got = read_block(carol, "lobby")
    finally:
        carol.close()
    assert len(got) == 20
    dave = clients(first)
    assert read_block(dave, "lobby") == got
    dave.send("/history 500")
    everything = read_block(dave, "lobby")
    assert everything[:60] == [f"{alice.nick}: a{i}" for i in range(30)] + [f"{bob.nick}: b{i}" for i in range(30)]
    assert [line for line in everything if line.startswith(f"{alice.nick}: c")] == [f"{alice.nick}: c{i}" for i in range(30)]
    assert [line for line in everything if line.startswith(f"{bob.nick}: d")] == [f"{bob.nick}: d{i}" for i in range(30)]
    assert len(everything) == 120
    assert got == everything[-20:]


# ------------------------------------------------------------------ metrics, full disk


def test_metrics_count_lines_batches_and_latency_per_store(start_server, clients, tmp_path):
    server = start_server("--db", str(tmp_path / "chat.db"), "--metrics-port", "0", "--no-presence", "--quiet")
    port = metrics_port(server)
    alice, bob = clients(server), clients(server)
    talk(alice, bob, *[f"m{i}" for i in range(100)], "/me counts")
    bob.send(f"/msg {alice.nick} not kept")
    alice.expect(f"*{bob.nick}* not kept")
    samples = wait_metric(port, "geventchat_history_lines_stored_total{store=sqlite}", lambda v: v == 101)
    assert samples["geventchat_history_lines_recorded_total{store=sqlite}"] == 101
    assert samples["geventchat_history_failed_writes_total{store=sqlite}"] == 0
    assert samples["geventchat_history_pending_lines{store=sqlite}"] == 0
    batches = samples["geventchat_history_write_batches_total{store=sqlite}"]
    assert 1 <= batches <= 101
    assert samples["geventchat_history_write_batch_seconds_count{store=sqlite}"] == batches
    assert samples["geventchat_history_write_batch_seconds_bucket{le=+Inf,store=sqlite}"] == batches
    assert samples["geventchat_history_write_batch_seconds_sum{store=sqlite}"] > 0
    memory = start_server("--metrics-port", "0", "--no-presence")
    port = metrics_port(memory)
    carol, dave = clients(memory), clients(memory)
    talk(carol, dave, "one", "two")
    wait_metric(port, "geventchat_history_lines_stored_total{store=memory}", lambda v: v == 2)
    off = start_server("--metrics-port", "0", "--history", "0")
    assert not any(name.startswith("geventchat_history") for name in scrape(metrics_port(off)))


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_one_client_making_many_rooms_cannot_grow_history_past_history_memory(start_server, clients, tmp_path, store):
    budget = 256 * 1024  # --history-memory 0.25: about 60 rooms of one 3000-byte line
    db = ("--db", str(tmp_path / "chat.db")) if store == "sqlite" else ()
    server = start_server("--history-memory", "0.25", *ON_JOIN, *db, "--metrics-port", "0", "--no-presence", "--quiet")
    port = metrics_port(server)
    alice = clients(server)
    rooms = 300
    for i in range(rooms):
        alice.send(f"/join r{i}", f"{i:04d}" + "x" * 2996)
        alice.expect(f"*** You are now in r{i}")
    alice.send("/history 1")  # after every line above: all of them are recorded
    assert read_block(alice, f"r{rooms - 1}") == [f"{alice.nick}: {rooms - 1:04d}" + "x" * 2996]
    samples = scrape(port)
    held = samples[f"geventchat_history_memory_bytes{{store={store}}}"]
    assert samples[f"geventchat_history_memory_budget_bytes{{store={store}}}"] == budget
    assert budget / 2 < held <= budget
    assert samples[f"geventchat_history_lines_recorded_total{{store={store}}}"] == rooms
    kept = samples[f"geventchat_history_memory_rooms{{store={store}}}"]
    assert 20 < kept < 100
    read_rooms = rooms + (
        1 if store == "sqlite" else 0
    )  # the SQLite cache also holds lobby's (empty) entry: read for the welcome
    assert samples[f"geventchat_history_rooms_evicted_total{{store={store}}}"] == read_rooms - kept
    bob = clients(server)
    for i in range(rooms - 20, rooms):  # the most recently written rooms replay their block on a join
        bob.send(f"/join r{i}")
        bob.expect(f"*** You are now in r{i}")
        assert read_block(bob, f"r{i}") == [f"{alice.nick}: {i:04d}" + "x" * 2996]
    bob.send("/join r0")
    bob.expect("*** You are now in r0")
    if store == "memory":  # its lines are gone with it
        bob.send("/history")
        bob.expect("*** No messages in r0 yet")
    else:  # only the cache entry went: the file has the line
        assert read_block(bob, "r0") == [f"{alice.nick}: 0000" + "x" * 2996]
    assert scrape(port)[f"geventchat_history_memory_bytes{{store={store}}}"] <= budget


def test_a_full_disk_keeps_relaying_logs_once_counts_and_catches_up(start_server, clients, tmp_path):
    path = str(tmp_path / "chat.db")
    server = start_server("--db", path, "--history", "100000", "--metrics-port", "0", "--no-presence", "--quiet")
    port = metrics_port(server)
    alice, bob = clients(server), clients(server)
    # A file size limit on the running server is a disk that is full for it (Python
    # ignores SIGXFSZ: the write fails with EFBIG, as with ENOSPC).
    resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
    lines = [f"{i} " + "x" * 200 for i in range(2000)]
    for chunk in range(0, len(lines), 500):
        talk(alice, bob, *lines[chunk : chunk + 500])  # relaying goes on
    wait_metric(port, "geventchat_history_failed_writes_total{store=sqlite}", lambda v: v is not None and v > 0)
    talk(bob, alice, "still relaying")
    warnings = [line for line in server.stdout_lines() if "History store (sqlite): cannot write" in line]
    assert len(warnings) == 1, warnings  # once a minute at most
    resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    wait_metric(port, "geventchat_history_lines_stored_total{store=sqlite}", lambda v: v == 2001, timeout=30)
    assert server.stop() == 0
    assert db_lines(path) == [f"{alice.nick}: {line}" for line in lines] + [f"{bob.nick}: still relaying"]


def test_redis_gone_joins_are_not_held_up_and_the_history_catches_up(start_server, clients, redis_server):  # noqa: F811
    first = start_server("--redis-url", redis_server.url, "--redis-expiry", "3", "--no-presence", *ON_JOIN)
    second = start_server("--redis-url", redis_server.url, "--redis-expiry", "3", "--no-presence", *ON_JOIN)
    alice, bob = clients(first), clients(first)
    talk(alice, bob, "before")
    redis_server.stop()
    for client in (alice, bob):
        client.until(lambda line: line.startswith("*** Link to the other servers is down"), timeout=10)
    talk(alice, bob, *[f"during {i}" for i in range(20)])  # the room goes on in its process
    started = time.monotonic()
    carol = clients(first)  # welcomed at once, without a block, rather than after a wait on Redis
    assert [line[:40] for line in carol.sync()] == ["*** Link to the other servers is down: u"]
    assert time.monotonic() - started < 4, "a join waited on the lost Redis"
    carol.send("/history")
    carol.expect("*** Error: history is not available right now (its store does not answer); try again later")
    redis_server.start()  # empty: a Redis without persistence forgot "before"
    # What was relayed meanwhile is written once Redis answers again, and every process reads it.
    deadline = time.monotonic() + 20
    while True:
        dave = clients(second)
        got = dave.sync()
        dave.close()
        if "*** Recent messages in lobby (20):" in got or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    block = got[got.index("*** Recent messages in lobby (20):") + 1 :][:20]
    assert [LINE_RE.match(line).group(2) for line in block] == [f"{alice.nick}: during {i}" for i in range(20)]
    assert first.stop() == 0 and second.stop() == 0
    assert first.stderr_lines() == [] and second.stderr_lines() == []


def test_workers_share_the_history_through_redis(start_server, clients, redis_server):  # noqa: F811
    from test_cluster import connect_over_both

    server = start_server("--workers", "2", "--redis-url", redis_server.url, "--no-presence", "--history-on-join", "0")
    group = connect_over_both(server, redis_server, clients, 6)  # members on both workers
    sender = group[0]
    sender.send(*[f"kept {i}" for i in range(50)], "/me is done")
    expected = [f"{sender.nick}: kept {i}" for i in range(50)] + [f"* {sender.nick} is done"]
    for member in group[1:]:
        member.until(lambda line: line == f"* {sender.nick} is done", timeout=10)
        # The lines reach members before they are written (at least once a second, in
        # batches): a member on the other worker may ask before the sender's worker wrote.
        deadline = time.monotonic() + 5
        while True:
            member.send("/history 51")
            head = member.line()
            if head != "*** No messages in lobby yet":
                block = read_block(member, "lobby", head)
                if block == expected or time.monotonic() > deadline:
                    break
            elif time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert head != "*** No messages in lobby yet" and block == expected
    assert server.stop() == 0
