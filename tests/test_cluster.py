"""Several server processes, one chat, over a real redis-server (issue 6, contract section 8).

Every server here is a real ``python -m geventchat.server --redis-url ...`` process; the
Redis is a real redis-server on a free port (``redis_fixture``). The heartbeat expiry is
short (``--redis-expiry``) so that the fault tests take seconds.
"""

from __future__ import annotations

import re
import signal
import socket
import time

import pytest
from conftest import ChatClient, run_server_command
from redis_fixture import redis_server  # noqa: F401  (fixture)

EXPIRY = "1"  # seconds: a killed process is found about 1.3 s later


@pytest.fixture
def cluster(start_server, redis_server):  # noqa: F811
    """Factory: ``cluster(2, "--no-presence")`` -> list of servers joined over Redis."""

    def start(count: int, *flags: str):
        return [start_server("--redis-url", redis_server.url, "--redis-expiry", EXPIRY, *flags) for _ in range(count)]

    start.redis = redis_server  # type: ignore[attr-defined]
    return start


def chat_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("*")]


def settle(*clients: ChatClient) -> None:
    """Wait until every ``joined`` line of these clients has arrived wherever it goes.

    A join is published to the other processes asynchronously: a client that connected to
    another process just after may or may not see an earlier client's join after its own
    welcome. Each client's later chat line comes after its join (one sender's lines are in
    order), so once everyone has seen everyone's marker line, no join is still on its way.
    """
    for client in clients:
        client.send(f"settle {client.nick}")
    for client in clients:
        markers = {f"{other.nick}: settle {other.nick}" for other in clients if other is not client}
        joins = {f"*** {other.nick} joined lobby" for other in clients}
        while markers:
            line = client.line()
            assert line in markers or line in joins, f"{client.nick}: unexpected {line!r}"
            markers.discard(line)


# ---------------------------------------------------------------------- chat


def test_two_processes_chat_exactly_once_in_order(cluster, clients):
    s1, s2 = cluster(2, "--no-presence")
    a = clients(s1)
    b, c = clients(s2), clients(s2)
    a2 = clients(s1)
    count = 300
    a.send(*[f"line {i} from a" for i in range(count)])
    b.send("hello from b", "/me waves")
    expected_from_a = [f"{a.nick}: line {i} from a" for i in range(count)]
    for receiver in (b, c, a2):
        got = receiver.lines(count + (2 if receiver is not b else 0), timeout=10)
        assert [line for line in got if line.startswith(f"{a.nick}: ")] == expected_from_a
        if receiver is not b:
            assert [line for line in got if b.nick in line] == [f"{b.nick}: hello from b", f"* {b.nick} waves"]
        receiver.expect_nothing()  # exactly once: nothing more came
    assert a.lines(2) == [f"{b.nick}: hello from b", f"* {b.nick} waves"]
    a.expect_nothing()  # its own lines never came back, not even through Redis
    # The console shows each message once, on the sender's server only.
    s1.wait_for_text(f"{a.nick}: line {count - 1} from a")
    s2.wait_for_text(f"{b.nick}: hello from b")
    assert s1.count_text(f"{a.nick}: line 7 from a") == 1
    assert s2.count_text(f"{a.nick}: line 7 from a") == 0
    assert s1.count_text(f"{b.nick}: hello from b") == 0
    for server in (s1, s2):  # a clean stop: exit 0, nothing on stderr
        assert server.stop() == 0
        assert server.stderr_lines() == []
        assert server.count_text("Server stopped") == 1


def test_three_processes_interleaved_senders_in_order(cluster, clients):
    servers = cluster(3, "--no-presence")
    senders = [clients(server) for server in servers]
    readers = [clients(server) for server in servers]
    count = 150
    for i in range(count):
        for sender in senders:
            sender.send(f"{i}")
    for reader in readers + senders:
        own = [s for s in senders if s is reader]
        got = reader.lines(count * (len(senders) - len(own)), timeout=15)
        for sender in senders:
            mine = [line for line in got if line.startswith(f"{sender.nick}: ")]
            expected = [] if sender is reader else [f"{sender.nick}: {i}" for i in range(count)]
            assert mine == expected, f"{reader.nick} from {sender.nick}"
        reader.expect_nothing()


def test_rooms_are_separate_across_processes(cluster, clients):
    s1, s2 = cluster(2, "--no-presence")
    a, b, c = clients(s1), clients(s2), clients(s2)
    a.send("/join #dev")
    a.expect("*** You are now in #dev")
    b.send("/join #DEV")
    b.expect("*** You are now in #DEV")
    a.send("only for dev")
    b.expect(f"{a.nick}: only for dev")
    c.expect_nothing()
    c.send("only for the lobby")
    a.expect_nothing()
    b.expect_nothing()


# ------------------------------------------------------------ presence and names


def test_presence_spans_processes(cluster, clients):
    s1, s2 = cluster(2)
    a = clients(s1)
    b = clients(s2)
    settle(a, b)
    b.send("/nick bob")
    b.expect("*** You are now known as bob")
    a.expect(f"*** {b.nick} is now known as bob")
    b.send("/join #dev")
    b.expect("*** You are now in #dev")
    a.expect("*** bob left lobby")
    b.send("/join lobby")
    b.expect("*** You are now in lobby")
    a.expect("*** bob joined lobby")
    b.send("/quit gone fishing")
    b.read_to_eof()
    a.expect("*** bob quit (gone fishing)")
    a.expect_nothing()


def test_msg_and_nickname_uniqueness_across_processes(cluster, clients):
    s1, s2 = cluster(2, "--no-presence")
    a, b = clients(s1), clients(s2)
    a.send("/nick alice")
    a.expect("*** You are now known as alice")
    b.send("/nick ALICE")
    b.expect("*** Error: nickname ALICE is already taken")
    b.send("/nick bob")
    b.expect("*** You are now known as bob")
    a.send("/msg BOB psst, over here")
    a.expect("*** To bob: psst, over here")
    b.expect("*alice* psst, over here")
    b.send("/msg alice hi alice")
    b.expect("*** To alice: hi alice")
    a.expect("*bob* hi alice")
    a.send("/msg nobody hello")
    a.expect("*** Error: no such nickname: nobody")
    # Names are given back: on a rename, and when their owner leaves.
    a.send("/nick alicia")
    a.expect("*** You are now known as alicia")
    b.send("/nick alice")
    b.expect("*** You are now known as alice")
    b.send("exit")
    b.read_to_eof()
    a.send("/nick alice")
    a.expect("*** You are now known as alice")
    a.send("/msg bob are you there?")
    a.expect("*** Error: no such nickname: bob")


def test_a_new_connection_never_gets_a_name_taken_elsewhere(cluster, clients):
    s1, s2 = cluster(2, "--no-presence")
    a = clients(s1)
    b = clients(s2)
    # b takes the name a new connection on s1 would get from its port... we cannot choose
    # our port, so take the name of an existing one instead and check variants are used.
    b.send(f"/nick {a.nick}")
    b.expect(f"*** Error: nickname {a.nick} is already taken")
    names = {a.nick, b.nick}
    for _ in range(5):
        c = clients(s2 if len(names) % 2 else s1)
        assert c.nick.lower() not in {n.lower() for n in names}
        names.add(c.nick)


def test_who_and_rooms_list_every_process(cluster, clients):
    s1, s2, s3 = cluster(3, "--no-presence")
    a, b, c = clients(s1), clients(s2), clients(s3)
    for client, nick in ((a, "alice"), (b, "bob"), (c, "carol")):
        client.send(f"/nick {nick}")
        client.expect(f"*** You are now known as {nick}")
    c.send("/join #dev")
    c.expect("*** You are now in #dev")
    a.send("/who")
    line = a.line()
    assert re.fullmatch(r"\*\*\* Members of lobby \(2\): .*", line), line
    assert sorted(line.split(": ", 1)[1].split()) == ["alice", "bob"]
    b.send("/rooms")
    assert b.lines(2) == ["*** #dev (1)", "*** lobby (2)"]
    c.send("/who")
    c.expect("*** Members of #dev (1): carol")
    c.send("/stats")
    assert c.lines(3) == ["*** 3 connected in 2 rooms", "*** #dev (1)", "*** lobby (2)"]
    b.send("exit")
    b.read_to_eof()
    a.send("/rooms")
    assert a.lines(2) == ["*** #dev (1)", "*** lobby (1)"]


# ------------------------------------------------------------------- faults


def test_killed_process_users_quit_once_and_names_are_freed(cluster, clients):
    s1, s2, s3 = cluster(3)
    a = clients(s1)
    c = clients(s3)
    victims = [clients(s2), clients(s2)]
    settle(a, c, *victims)
    victims[0].send("/nick doomed")
    victims[0].expect("*** You are now known as doomed")
    a.expect(f"*** {victims[0].nick} is now known as doomed")
    c.expect(f"*** {victims[0].nick} is now known as doomed")
    names = ["doomed", victims[1].nick]
    started = time.monotonic()
    s2.signal(signal.SIGKILL)
    for client in (a, c):
        got = client.lines(2, timeout=10)
        assert sorted(got) == sorted(f"*** {name} quit" for name in names), got
    elapsed = time.monotonic() - started
    assert elapsed < 8, elapsed
    for client in (a, c):
        client.expect_nothing()  # once, not once per survivor
    a.send("/nick doomed")
    a.expect("*** You are now known as doomed")
    c.expect(f"*** {a.nick} is now known as doomed")
    a.send("/who")
    a.expect(f"*** Members of lobby (2): doomed {c.nick}")


def test_redis_gone_local_chat_goes_on_and_the_link_comes_back(cluster, clients):
    s1, s2 = cluster(2, "--no-presence")
    redis = cluster.redis
    a, a2, b = clients(s1), clients(s1), clients(s2)
    a.send("before")
    a2.expect(f"{a.nick}: before")
    b.expect(f"{a.nick}: before")
    redis.stop()
    down = re.compile(r"^\*\*\* Link to the other servers is down")
    for client in (a, a2, b):
        client.until(lambda line: down.match(line) is not None, timeout=10)
    for i in range(50):
        a.send(f"local {i}")
    assert a2.lines(50) == [f"{a.nick}: local {i}" for i in range(50)]
    b.send("/who")  # its own process still answers
    b.expect(f"*** Members of lobby (1): {b.nick}")
    redis.start()
    for client in (a, a2, b):
        client.until(lambda line: line == "*** Link to the other servers is back", timeout=15)
    # The processes re-announced themselves: the chat and the names span them again.
    b.send("after")
    a.expect(f"{b.nick}: after")
    a2.expect(f"{b.nick}: after")
    b.send(f"/nick {a.nick}")
    b.expect(f"*** Error: nickname {a.nick} is already taken")
    a.send("/who")
    line = a.line()
    assert sorted(line.split(": ", 1)[1].split()) == sorted([a.nick, a2.nick, b.nick])
    for client in (a, a2, b):
        client.expect_nothing()
    for server in (s1, s2):
        assert server.stop() == 0
        assert server.stderr_lines() == []  # no traceback from the lost link


# ---------------------------------------------------------------- command line


def test_workers_needs_redis_url():
    result = run_server_command("--workers", "2", "--port", "0")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "Error: --workers needs --redis-url (the worker processes share one chat through Redis)"
    ]


def test_unreachable_redis_is_one_line_and_exit_1(redis_server):  # noqa: F811
    port = redis_server.port
    redis_server.stop()
    result = run_server_command("--port", "0", "--redis-url", f"redis://127.0.0.1:{port}/0")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot reach Redis at redis://127.0.0.1:{port}/0"), lines


# ------------------------------------------------------------------- --workers


def members_per_process(redis) -> list[int]:
    keys = re.findall(rb"geventchat:members:[^\r\n]+", redis.command("KEYS", "geventchat:members:*"))
    return sorted(int(redis.command("HLEN", key.decode())[1:].strip()) for key in keys)


def connect_over_both(server, redis, clients, at_least: int, *, limit: int = 40) -> list:
    """At least ``at_least`` clients of a ``--workers 2`` server, more if needed until both
    workers have some: the kernel spreads connections over the workers by a hash, and a
    few of them all land on one worker now and then."""
    group = [clients(server) for _ in range(at_least)]
    while len(members_per_process(redis)) < 2 and len(group) < limit:
        group.append(clients(server))
    assert len(members_per_process(redis)) == 2, "every connection went to one worker"
    return group


def test_workers_share_one_port_and_chat_as_one_room(start_server, redis_server, clients):  # noqa: F811
    server = start_server("--workers", "2", "--redis-url", redis_server.url, "--redis-expiry", EXPIRY, "--no-presence")
    group = connect_over_both(server, redis_server, clients, 12)
    counts = members_per_process(redis_server)
    assert len(counts) == 2 and min(counts) > 0 and sum(counts) == len(group), counts  # spread over both
    group[5].send("/rooms")
    group[5].expect(f"*** lobby ({len(group)})")
    sender = group[0]
    sender.send(*[f"to everyone {i}" for i in range(50)])
    for other in group[1:]:
        assert other.lines(50, timeout=10) == [f"{sender.nick}: to everyone {i}" for i in range(50)]
        other.expect_nothing()
    assert server.stop() == 0
    assert server.count_text("Server stopped") == 1
    assert sum(1 for line in server.stdout_lines() if "Server listening on" in line) == 1
    assert members_per_process(redis_server) == []  # the workers left the cluster cleanly


def test_a_stop_of_all_workers_tells_every_client_once_and_nothing_after(start_server, redis_server, clients):  # noqa: F811
    # The whole server stops: as with one process, everyone gets "*** Server shutting
    # down" and no "*** NICK quit" of the users leaving from the other worker.
    server = start_server("--workers", "2", "--redis-url", redis_server.url, "--redis-expiry", EXPIRY)
    group = connect_over_both(server, redis_server, clients, 8)
    settle(*group)
    server.signal(signal.SIGTERM)
    for client in group:
        assert client.read_to_eof(timeout=10) == ["*** Server shutting down"], client
    assert server.wait(10) == 0


def test_workers_serve_the_web_port_too(start_server, redis_server, clients):  # noqa: F811
    from web_helpers import WsClient, web_port

    server = start_server("--workers", "2", "--redis-url", redis_server.url, "--no-presence", "--web-port", "0")
    port = web_port(server)
    assert sum("Web client on" in line for line in server.stdout_lines()) == 1  # the parent's line only
    browsers = []
    try:
        while len(browsers) < 4 or len(members_per_process(redis_server)) < 2:
            assert len(browsers) < 40, "every web connection went to one worker"
            browsers.append(WsClient(port))
        terminal = clients(server)
        terminal.send("hello browsers")
        for browser in browsers:
            browser.expect(f"{terminal.nick}: hello browsers")
        browsers[0].send("hello from a page")
        terminal.expect(f"{browsers[0].nick}: hello from a page")
        for other in browsers[1:]:
            other.expect(f"{browsers[0].nick}: hello from a page")
    finally:
        for browser in browsers:
            browser.sock.close()
    assert server.stop() == 0
    assert server.stderr_lines() == []


def test_workers_with_a_web_port_in_use_is_one_line(redis_server):  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server_command("--workers", "2", "--redis-url", redis_server.url, "--port", "0", "--web-port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"Error: cannot listen on 127.0.0.1:{port}: port {port} is already in use"]


def test_a_subscriber_cut_off_for_falling_behind_reconnects(start_server, redis_server, clients):  # noqa: F811
    # Redis disconnects a subscriber whose pending output passes the pub/sub limit; a
    # stopped process cannot read, so it falls behind while the other one talks.
    assert redis_server.command("CONFIG", "SET", "client-output-buffer-limit", '"pubsub 1mb 512kb 1"') == b"+OK\r\n"
    s1, s2 = (start_server("--redis-url", redis_server.url, "--redis-expiry", "60", "--no-presence", "--quiet") for _ in range(2))
    a, b = clients(s1), clients(s2)
    a.send("before")
    b.expect(f"{a.nick}: before")
    s2.signal(signal.SIGSTOP)
    try:
        filler = "x" * 500
        for chunk in range(30):
            a.send(*[f"{chunk} {i} {filler}" for i in range(1000)])  # 15 MB in all
        a.expect_nothing()  # s1 has read it all
    finally:
        s2.signal(signal.SIGCONT)
    b.until(lambda line: line.startswith("*** Link to the other servers is down"), timeout=20)
    b.until(lambda line: line == "*** Link to the other servers is back", timeout=20)
    a.send("after")
    b.until(lambda line: line == f"{a.nick}: after", timeout=10)
    b.expect_nothing()


def test_a_stalled_process_is_shown_quit_then_back(cluster, clients):
    s1, s2 = cluster(2)
    a, b = clients(s1), clients(s2)
    settle(a, b)
    s2.signal(signal.SIGSTOP)  # longer than the expiry: taken for dead
    try:
        a.expect(f"*** {b.nick} quit", timeout=10)
    finally:
        s2.signal(signal.SIGCONT)
    a.expect(f"*** {b.nick} joined lobby", timeout=10)
    b.send("still here")
    a.expect(f"{b.nick}: still here")
    a.send(f"/nick {b.nick}")
    a.expect(f"*** Error: nickname {b.nick} is already taken")


def test_a_name_taken_twice_while_redis_was_away_is_changed_on_one_side(cluster, clients):
    s1, s2 = cluster(2, "--no-presence")
    redis = cluster.redis
    a, b = clients(s1), clients(s2)
    redis.stop()
    for client in (a, b):
        client.until(lambda line: line.startswith("*** Link to the other servers is down"), timeout=10)
    a.send("/nick zed")
    a.expect("*** You are now known as zed")
    b.send("/nick ZED")  # only checked locally now
    b.expect("*** You are now known as ZED")
    redis.start()
    notices = []
    for client in (a, b):
        client.until(lambda line: line == "*** Link to the other servers is back", timeout=15)
        notices += [line for line in client.sync() if "taken on another server" in line]
    deadline = time.monotonic() + 5
    while not notices and time.monotonic() < deadline:
        for client in (a, b):
            notices += [line for line in client.sync() if "taken on another server" in line]
    assert len(notices) == 1, notices
    assert re.fullmatch(
        r"\*\*\* Your nickname (zed|ZED) was taken on another server while the link was down: you are now known as (zed|ZED)-2",
        notices[0],
    ), notices
    a.send("/who")
    names = sorted(a.line().split(": ", 1)[1].split())
    assert sorted(n.lower() for n in names) == ["zed", "zed-2"], names


def test_a_killed_worker_is_restarted_and_its_users_quit(start_server, redis_server, clients):  # noqa: F811
    server = start_server("--workers", "2", "--redis-url", redis_server.url, "--redis-expiry", EXPIRY)
    import psutil

    group = connect_over_both(server, redis_server, clients, 8)
    settle(*group)
    workers = psutil.Process(server.pid).children()
    assert len(workers) == 2
    workers[0].kill()
    server.wait_for(lambda line: "Worker" in line and "ended" in line and "starting it again" in line)
    survivors, gone = [], []
    for client in group:
        try:
            client.sock.settimeout(0.5)
            data = client.sock.recv(65536, socket.MSG_PEEK)
        except TimeoutError:
            data = b"alive"
        except OSError:
            data = b""
        (survivors if data else gone).append(client)
    assert survivors and gone, (survivors, gone)
    for client in survivors:
        got = client.lines(len(gone), timeout=10)
        assert sorted(got) == sorted(f"*** {c.nick} quit" for c in gone), got
    # The restarted worker serves new clients, in the same chat.
    deadline = time.monotonic() + 10
    while len(psutil.Process(server.pid).children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    newcomers = connect_over_both(server, redis_server, clients, 6)  # some on the new worker
    settle(*survivors, *newcomers)
    newcomers[0].send("hello again")
    for client in survivors + newcomers[1:]:
        client.expect(f"{newcomers[0].nick}: hello again")
    assert server.stop() == 0
    assert server.stderr_lines() == []


def test_a_worker_restarted_while_redis_is_away_serves_its_users(start_server, redis_server, clients):  # noqa: F811
    # A worker that dies while Redis is down is started again at once, without the link: its
    # share of new connections (the kernel's hash) must be served, not left waiting for Redis.
    server = start_server("--workers", "2", "--redis-url", redis_server.url, "--redis-expiry", EXPIRY, "--no-presence")
    import psutil

    connect_over_both(server, redis_server, clients, 4)
    redis_server.stop()
    victim, survivor = psutil.Process(server.pid).children()
    victim.kill()
    server.wait_for(lambda line: f"(pid {victim.pid}) ended" in line)
    time.sleep(1.5)  # past the first restart
    # Connect until one is served by a worker other than the survivor; each must be
    # welcomed in time (a connection left in a dead worker's queue is never welcomed).
    newcomers = []
    for _ in range(30):
        newcomers.append(clients(server, timeout=5))  # the welcome, or a timeout failure
        on_survivor = {c.raddr[1] for c in survivor.net_connections(kind="tcp") if c.raddr}
        if any(c.port not in on_survivor for c in newcomers):
            break
    else:
        raise AssertionError("no connection went to the restarted worker")
    for client in newcomers:  # told at once, after the welcome, as the others were
        client.expect("*** Link to the other servers is down: until it is back, only users of this server see your messages")
    redis_server.start()
    for client in newcomers:
        client.until(lambda line: line == "*** Link to the other servers is back", timeout=15)
    settle(*newcomers)  # one chat across both workers again
    assert server.stop() == 0
    assert server.stderr_lines() == []


def test_workers_do_not_share_a_port_with_another_server(start_server, redis_server):  # noqa: F811
    first = start_server("--workers", "2", "--redis-url", redis_server.url)
    result = run_server_command(
        "--workers", "2", "--redis-url", redis_server.url, "--host", "127.0.0.1", "--port", str(first.port)
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{first.port}: port {first.port} is already in use"
    ]


def test_a_server_stopping_shows_its_users_quit_elsewhere_and_frees_their_names(cluster, clients):
    s1, s2 = cluster(2)
    a, b, c = clients(s1), clients(s2), clients(s2)
    settle(a, b, c)
    assert s2.stop() == 0
    got = a.lines(2)
    assert sorted(got) == sorted(f"*** {x.nick} quit (server shutting down)" for x in (b, c)), got
    a.expect_nothing()
    a.send(f"/nick {b.nick}")
    a.expect(f"*** You are now known as {b.nick}")
    a.send("/who")
    a.expect(f"*** Members of lobby (1): {b.nick}")


def test_a_stop_while_users_are_leaving_shows_each_of_them_quit_elsewhere(cluster, clients):
    """SIGTERM while hundreds of users are leaving: each is shown as quit on the other
    server, and the stopping one ends cleanly. A leaving user waits for Redis (its name is
    freed before the others are told); the stop used to throw into that wait, cutting the
    leave short with an "Internal error" traceback: no quit line, the name never freed."""
    s1, s2 = cluster(2)
    watcher = clients(s2)
    leaving = [socket.create_connection(("127.0.0.1", s1.port), timeout=5) for _ in range(300)]
    joined = set()
    for _ in leaving:
        match = re.fullmatch(r"\*\*\* (\S+) joined lobby", watcher.line(timeout=20))
        assert match, "expected only joins"
        joined.add(match.group(1))
    for sock in leaving:  # all leave at once, and the server is told to stop meanwhile
        sock.close()
    s1.signal(signal.SIGTERM)
    assert s1.wait(timeout=15) == 0
    assert s1.stderr_lines() == []
    assert not [line for line in s1.stdout_lines() if "Internal error" in line or "Traceback" in line]
    quits = set()
    for _ in leaving:
        match = re.fullmatch(r"\*\*\* (\S+) quit( \(server shutting down\))?", watcher.line(timeout=10))
        assert match, "expected only quits"
        quits.add(match.group(1))
    assert quits == joined
    watcher.expect_nothing()
