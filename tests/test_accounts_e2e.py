"""Accounts (contract section 11), black-box over real sockets: a real server process
with a real SQLite file (``--db``) or a real redis-server (``--redis-url``)."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from conftest import HOST, ChatClient
from redis_fixture import redis_server  # noqa: F401  (fixture)

PASSWORD = "correct-horse-9"
OTHER = "battery-staple-7"
WRONG = "wrong nickname or password"
NO_STORE = "*** Error: accounts need a server started with --db or --redis-url"


def client_from(server, address: str) -> ChatClient:
    """A client whose connection comes from ``address`` (127.0.0.0/8 is all loopback)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((address, 0))
    return ChatClient(server.port, sock=sock)


@pytest.fixture
def db_server(start_server, tmp_path):
    path = tmp_path / "chat.db"
    server = start_server("--db", str(path), "--metrics-port", "0", "--no-presence")
    server.db_path = path
    return server


def named(client: ChatClient, nick: str) -> ChatClient:
    client.send(f"/nick {nick}")
    client.expect(f"*** You are now known as {nick}")
    client.nick = nick
    return client


def registered(client: ChatClient, nick: str, password: str = PASSWORD) -> ChatClient:
    named(client, nick)
    client.send(f"/register {password}")
    client.expect(f"*** {nick} is now registered and you are logged in")
    return client


def test_without_a_store_the_commands_say_what_they_need(quiet_server, clients):
    a = clients(quiet_server)
    a.send("/register " + PASSWORD, "/login alice " + PASSWORD, "/logout", "/password " + PASSWORD + " " + OTHER)
    a.expect(NO_STORE, NO_STORE, NO_STORE, NO_STORE)


def test_register_login_logout_password(start_server, clients, tmp_path):
    server = start_server("--db", str(tmp_path / "chat.db"), "--no-presence")
    a, b = clients(server), clients(server)
    a.send("/register " + PASSWORD)  # a port name: all digits
    assert a.line().startswith(f"*** Error: nickname {a.nick} cannot be registered")
    # Nor a port name's variant, which the server gives a connection whose port name is taken.
    named(a, "65000-2")
    a.send("/register " + PASSWORD)
    assert a.line().startswith("*** Error: nickname 65000-2 cannot be registered")
    named(a, "alice")
    a.send("/register short1", "/register has space")
    assert a.line().startswith("*** Error: a password has 8 to 128 characters")
    assert a.line().startswith("*** Error: a password cannot contain spaces")
    a.send("/register " + PASSWORD)
    a.expect("*** alice is now registered and you are logged in")  # loopback: no warning
    a.send("/register " + OTHER)
    a.expect("*** Error: nickname alice is already registered")
    # Nobody else can take it with /nick, in any capitals.
    b.send("/nick alice", "/nick ALICE")
    b.expect(
        "*** Error: nickname alice is registered; use /login alice PASSWORD",
        "*** Error: nickname ALICE is registered; use /login ALICE PASSWORD",
    )
    # Wrong password and unknown nickname: the same words.
    b.send("/login alice " + OTHER, "/login nobody " + PASSWORD)
    b.expect(f"*** Error: {WRONG}", f"*** Error: {WRONG}")
    # Logging out keeps the name until it is changed.
    a.send("/logout")
    a.expect("*** You are logged out")
    a.send("/logout", "/password " + PASSWORD + " " + OTHER)
    assert a.line().startswith("*** Error: you are not logged in")
    assert a.line().startswith("*** Error: you are not logged in")
    a.send("/who")
    assert "alice" in a.line().split()
    a.send("/nick alice2", "/nick alice")
    a.expect("*** You are now known as alice2", "*** Error: nickname alice is registered; use /login alice PASSWORD")
    a.send("/login alice " + PASSWORD)
    a.expect("*** You are now known as alice", "*** You are now logged in as alice")
    a.send("/password " + OTHER + " " + PASSWORD, "/password " + PASSWORD + " x")
    a.expect(f"*** Error: {WRONG}", "*** Error: a password has 8 to 128 characters")
    a.send("/password " + PASSWORD + " " + OTHER)
    a.expect("*** Password changed")
    b.send("/login alice " + PASSWORD)
    b.expect(f"*** Error: {WRONG}")


def test_login_takes_the_name_from_whoever_holds_it_and_the_room_sees_it(start_server, clients, tmp_path):
    server = start_server("--db", str(tmp_path / "chat.db"))
    a, b, c = clients(server), clients(server), clients(server)
    for early, late in ((a, b), (a, c), (b, c)):
        early.until(lambda line, late=late: line == f"*** {late.nick} joined lobby")
    a_port, b_port = a.nick, b.nick
    registered(a, "alice")
    b.expect(f"*** {a_port} is now known as alice")
    c.expect(f"*** {a_port} is now known as alice")
    b.send("/login alice " + PASSWORD)
    b.expect("*** alice is now known as " + a_port, "*** You are now known as alice", "*** You are now logged in as alice")
    a.expect(
        "*** You were logged out: alice logged in from another connection",
        f"*** You are now known as {a_port}",
        f"*** {b_port} is now known as alice",
    )
    c.expect(f"*** alice is now known as {a_port}", f"*** {b_port} is now known as alice")
    # The one logged out is no longer logged in; the new holder is.
    a.send("/password " + PASSWORD + " " + OTHER)
    assert a.line().startswith("*** Error: you are not logged in")
    b.send("/password " + PASSWORD + " " + OTHER)
    b.expect("*** Password changed")


def test_lockout_per_nickname_from_any_address(db_server, clients):
    owner = registered(clients(db_server), "alice")
    owner.send("/logout")
    owner.expect("*** You are logged out")
    attackers = [client_from(db_server, f"127.0.0.{i}") for i in range(2, 7)]
    for attacker in attackers:
        clients.made.append(attacker)
        attacker.send("/login alice guess-" + attacker.sock.getsockname()[0])
        attacker.expect(f"*** Error: {WRONG}")
    # A sixth address, even with the right password: refused, no check.
    late = client_from(db_server, "127.0.0.9")
    clients.made.append(late)
    late.send("/login alice " + PASSWORD)
    line = late.line()
    assert line.startswith("*** Error: too many failed logins; try again in ") and line.endswith(" s"), line
    assert 55 <= int(line.split()[-2]) <= 60
    # Another nickname from that address is not locked.
    registered(clients(db_server), "bob").send("/logout")
    late.send("/login bob " + PASSWORD)
    late.until(lambda text: text == "*** You are now logged in as bob")


def test_lockout_per_address_for_any_nickname(db_server, clients):
    registered(clients(db_server), "carol")
    attacker = client_from(db_server, "127.0.0.3")
    clients.made.append(attacker)
    for i in range(5):
        attacker.send(f"/login user{i} {PASSWORD}")
        attacker.expect(f"*** Error: {WRONG}")
    attacker.send("/login carol " + PASSWORD)
    assert attacker.line().startswith("*** Error: too many failed logins; try again in ")
    # From another address carol's right password still works (her name is not locked).
    other = client_from(db_server, "127.0.0.4")
    clients.made.append(other)
    other.send("/login carol " + PASSWORD)
    other.until(lambda text: text == "*** You are now logged in as carol")


def test_accounts_survive_a_restart_and_no_password_is_stored_or_logged(start_server, clients, tmp_path):
    path = tmp_path / "chat.db"
    first = start_server("--db", str(path))
    a = registered(clients(first), "dave")
    a.send("/password " + PASSWORD + " " + OTHER)
    a.expect("*** Password changed")
    a.send("hello")  # a chat line, logged as such
    first.wait_for_text("dave: hello")
    a.send("/history")
    block = a.sync()
    assert any(line.endswith("dave: hello") for line in block), block
    assert not any(PASSWORD in line or OTHER in line for line in block)
    assert first.stop() == 0
    second = start_server("--db", str(path))
    b = clients(second)
    b.send("/nick dave")
    b.expect("*** Error: nickname dave is registered; use /login dave PASSWORD")
    b.send("/login dave " + PASSWORD, "/login DAVE " + OTHER)
    b.expect(f"*** Error: {WRONG}", "*** You are now known as DAVE", "*** You are now logged in as DAVE")
    assert second.stop() == 0
    console = "\n".join(first.stdout_lines() + first.stderr_lines() + second.stdout_lines() + second.stderr_lines())
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("chat.db"))
    assert b"$argon2id$" in stored
    for secret in (PASSWORD, OTHER):
        assert secret not in console
        assert secret.encode() not in stored
    import sqlite3

    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(accounts)")]
        version = conn.execute("SELECT version FROM schema_versions WHERE component = 'accounts'").fetchone()
    assert columns == ["nick_key", "nick", "password_hash", "created"]
    assert version == (1,)


def test_metrics_count_registrations_logins_failures_and_lockouts(db_server, clients):
    port = int(db_server.wait_for(lambda l: "Metrics at http://" in l).rsplit(":", 1)[1].split("/")[0])
    registered(clients(db_server), "erin")
    b = clients(db_server)
    for _ in range(5):
        b.send("/login erin " + OTHER)
        b.expect(f"*** Error: {WRONG}")
    b.send("/login erin " + OTHER)
    assert b.line().startswith("*** Error: too many failed logins")
    c = client_from(db_server, "127.0.0.5")
    clients.made.append(c)
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")}
    assert values["geventchat_registrations_total"] == 1
    assert values["geventchat_logins_total"] == 0
    assert values["geventchat_login_failures_total"] == 5
    assert values["geventchat_login_lockouts_total"] == 1
    assert OTHER not in text and PASSWORD not in text


def test_cluster_accounts_span_processes(start_server, redis_server, clients):  # noqa: F811
    one, two = (start_server("--redis-url", redis_server.url, "--no-presence") for _ in range(2))
    a = registered(clients(one), "frank")
    b = clients(two)
    b.send("/nick frank")
    b.expect("*** Error: nickname frank is registered; use /login frank PASSWORD")
    b.send("/login frank " + OTHER)
    b.expect(f"*** Error: {WRONG}")
    # A login on the other process takes the name over from the holder there.
    b.send("/login frank " + PASSWORD)
    b.expect("*** You are now known as frank", "*** You are now logged in as frank")
    a.expect("*** You were logged out: frank logged in from another connection", f"*** You are now known as {a.port}")
    a.send("/msg frank hi")
    a.expect("*** To frank: hi")
    b.expect(f"*{a.port}* hi")
    # Accounts live in Redis: a third process started later knows them.
    three = start_server("--redis-url", redis_server.url, "--no-presence")
    c = clients(three)
    c.send("/nick FRANK")
    c.expect("*** Error: nickname FRANK is registered; use /login FRANK PASSWORD")
    stored = redis_server.command("HGETALL", "geventchat:account:frank")
    assert b"$argon2id$" in stored and PASSWORD.encode() not in stored


def test_with_redis_away_names_seen_registered_stay_protected(start_server, redis_server, clients):  # noqa: F811
    server = start_server("--redis-url", redis_server.url, "--no-presence")
    a = registered(clients(server), "lena")
    named(a, "elsewhere")
    b = clients(server)
    redis_server.stop()
    b.until(lambda line: line.startswith("*** Link to the other servers is down"), timeout=15)
    b.send("/nick lena", "/nick fresh", "/login lena " + PASSWORD)
    b.expect(
        "*** Error: nickname lena is registered; use /login lena PASSWORD",
        "*** You are now known as fresh",  # renames go on, checked here only
        "*** Error: the account store is unavailable right now; try again later",
    )


def test_hashing_is_off_the_loop(start_server, clients, tmp_path):
    """While 8 connections register at once, a chat line between two others arrives about
    as fast as without them (compared in this test, with a generous margin)."""
    import threading
    import time

    server = start_server("--db", str(tmp_path / "chat.db"), "--no-presence", "--quiet")
    sender, receiver = clients(server), clients(server)
    busy = [named(clients(server), f"reg{i}") for i in range(8)]
    for client in busy:
        client.send("/join elsewhere")
        client.expect("*** You are now in elsewhere")

    def round_trip(i: int) -> float:
        start = time.perf_counter()
        sender.send(f"ping {i}")
        receiver.expect(f"{sender.nick}: ping {i}")
        return time.perf_counter() - start

    for i in range(5):
        round_trip(i)  # warm up
    quiet = max(round_trip(i) for i in range(20))
    replies: list[float] = []

    def await_reply(client: ChatClient, i: int) -> None:
        client.expect(f"*** reg{i} is now registered and you are logged in", timeout=30)
        replies.append(time.perf_counter())

    readers = [threading.Thread(target=await_reply, args=(c, i), daemon=True) for i, c in enumerate(busy)]
    for reader in readers:
        reader.start()
    began = time.perf_counter()
    for i, client in enumerate(busy):  # argon2id: tens of ms of CPU each
        client.send(f"/register {PASSWORD}{i}")
    loaded = []
    while len(replies) < len(busy) or len(loaded) < 5:
        loaded.append(round_trip(len(loaded)))
        assert time.perf_counter() - began < 30
    for reader in readers:
        reader.join(5)
    assert len(replies) == 8
    # The pings really ran while the hashing did (else this proves nothing).
    assert len(loaded) >= 5 and began + sum(loaded[:-1]) < max(replies), (loaded, replies)
    assert max(loaded) < 10 * quiet + 0.05, (quiet, loaded)


def test_a_bad_db_path_is_one_line(tmp_path):
    from conftest import run_server_command

    result = run_server_command("--port", "0", "--db", str(tmp_path / "missing" / "chat.db"))
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert Path(tmp_path / "missing").exists() is False
