"""End-to-end tests of the chat server: real process, real sockets on 127.0.0.1.

Contract sections 2 (console) and 3 (wire protocol): the seed session, every command and
its errors, rooms, nicknames, presence, and the text rules (UTF-8, control characters).
"""

from __future__ import annotations

import re
import socket
import time

import pytest
from conftest import NICK_RE, WAIT, ChatClient, join_all
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.timeout(60)

UNKNOWN = "*** Error: unknown command /{}; type /help for the list"


# --------------------------------------------------------------------- the seed session


def test_seed_session_three_clients(server, clients):
    a, b, c = group = join_all(clients, server, 3)
    for client in group:
        assert client.nick == str(client.port), "the default nickname is the source port"
        assert client.room == "lobby"
        server.wait_for_text(f"New connection from 127.0.0.1:{client.port}")

    sent: list[tuple[ChatClient, str]] = []
    for round_ in range(2):
        for sender in group:
            text = f"hello {round_} from {sender.port}"
            sender.send(text)
            sent.append((sender, text))
            for other in group:
                if other is not sender:
                    other.expect(f"{sender.port}: {text}")
    # Nothing else arrived anywhere: no duplicates, no echo to the sender.
    for client in group:
        client.expect_nothing()

    # The console shows every message once (not once per recipient).
    for sender, text in sent:
        server.wait_for_text(f"{sender.port}: {text}")

    for client in group:
        client.close()
    for client in group:
        server.wait_for_text(f"Client 127.0.0.1:{client.port} disconnected")
    for sender, text in sent:
        assert server.count_text(f"{sender.port}: {text}") == 1
    for client in group:
        assert server.count_text(f"New connection from 127.0.0.1:{client.port}") == 1


def test_console_message_lines_off_with_quiet_and_warning(start_server):
    for flags in (("--quiet",), ("--log-level", "warning")):
        server = start_server(*flags)
        a = ChatClient(server.port)
        b = ChatClient(server.port)
        a.expect(f"*** {b.nick} joined lobby")
        a.send("unlogged text")
        b.expect(f"{a.nick}: unlogged text")
        a.close()
        b.close()
        assert server.stop() == 0
        lines = server.stdout_lines()
        assert any("Server listening on 127.0.0.1:" in line for line in lines)
        assert not any("unlogged text" in line for line in lines), (flags, lines)


def test_welcome_is_the_first_line_and_names_the_port(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    port = sock.getsockname()[1]
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "closed before the welcome"
        data += chunk
    sock.close()
    first = data.split(b"\n", 1)[0].decode()
    assert first == f"*** Welcome, {port}! You are in lobby. Type /help for commands."


def test_nickname_variant_when_the_port_name_is_taken(server, clients):
    a = clients(server)
    # Reserve a source port, take its number as a nickname, then connect from it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    a.send(f"/nick {port}")
    a.expect(f"*** You are now known as {port}")
    b = ChatClient(server.port, sock=sock)
    try:
        assert b.port == port
        assert b.nick != str(port)
        assert NICK_RE.match(b.nick), b.nick
        assert b.nick.startswith(str(port)), b.nick
        a.expect(f"*** {b.nick} joined lobby")
        b.send("who am i")
        a.expect(f"{b.nick}: who am i")
    finally:
        b.close()


# ------------------------------------------------------------------------- chatting


def test_chat_line_forms(quiet_server, clients):
    a, b = join_all(clients, quiet_server, 2, presence=False)
    a.send("//slash at the start")
    b.expect(f"{a.nick}: /slash at the start")
    a.send_raw(b"crlf line\r\n")
    b.expect(f"{a.nick}: crlf line")
    a.send("exit now")  # not "exit" alone: a chat message
    b.expect(f"{a.nick}: exit now")
    a.send("")
    a.send_raw(b"\r\n")
    a.send("after blanks")
    b.expect(f"{a.nick}: after blanks")
    a.send("  spaces around  ")
    b.expect(f"{a.nick}:   spaces around  ")
    a.expect_nothing()
    b.expect_nothing()


def test_unicode_is_relayed_unchanged(quiet_server, clients):
    a, b = join_all(clients, quiet_server, 2, presence=False)
    text = "grüße ☃ 日本語 𝄞 tab\there"
    a.send(text)
    b.expect(f"{a.nick}: {text}")


def test_invalid_utf8_is_replaced(quiet_server, clients):
    a, b = join_all(clients, quiet_server, 2, presence=False)
    a.send_raw(b"bad \xff byte and \xfe\n")
    raw = b.line_bytes()
    assert raw.decode("utf-8") == f"{a.nick}: bad \ufffd byte and \ufffd"
    a.send_raw(b"caf\xc3\n")  # truncated sequence at the end of the line
    assert b.line() == f"{a.nick}: caf\ufffd"
    a.expect_nothing()


def test_control_characters_and_escape_sequences_are_removed(quiet_server, clients):
    a, b = join_all(clients, quiet_server, 2, presence=False)
    a.send_raw(b"\x1b[31mred\x1b[0m \x07bell\x7f del \x1b]0;title\x07 \xc2\x9b1m c1 \x00nul\ttab a\rb\n")
    got = b.line()
    assert got == f"{a.nick}: [31mred[0m bell del ]0;title 1m c1 nul\ttab ab"
    for char in got:
        code = ord(char)
        assert char == "\t" or not (code < 0x20 or 0x7F <= code <= 0x9F), repr(got)
    # Same for actions and private messages.
    a.send_raw(b"/me waves \x1b[2J\x1b[H\n")
    assert b.line() == f"* {a.nick} waves [2J[H"
    a.send_raw(f"/msg {b.nick} psst \x1b[5m!\x08\n".encode())
    assert b.line() == f"*{a.nick}* psst [5m!"
    reply = a.line()
    assert reply.startswith(f"*** To {b.nick}: psst") and "\x1b" not in reply and "\x08" not in reply


def test_thousand_messages_arrive_in_order(quiet_server, clients):
    a, b, c = join_all(clients, quiet_server, 3, presence=False)
    expected = [f"message {i:04d} " + "x" * (i % 50) for i in range(1000)]
    a.send(*expected)
    for receiver in (b, c):
        got = receiver.lines(1000, timeout=20)
        assert got == [f"{a.nick}: {text}" for text in expected]
        receiver.expect_nothing()
    a.expect_nothing()


def test_messages_from_several_senders_keep_each_senders_order(quiet_server, clients):
    a, b, c = join_all(clients, quiet_server, 3, presence=False)
    for i in range(200):
        a.send(f"a{i}")
        b.send(f"b{i}")
    got = c.lines(400, timeout=10)
    assert [line for line in got if line.startswith(f"{a.nick}: ")] == [f"{a.nick}: a{i}" for i in range(200)]
    assert [line for line in got if line.startswith(f"{b.nick}: ")] == [f"{b.nick}: b{i}" for i in range(200)]
    assert [line for line in a.lines(200, timeout=10)] == [f"{b.nick}: b{i}" for i in range(200)]
    assert [line for line in b.lines(200, timeout=10)] == [f"{a.nick}: a{i}" for i in range(200)]


# ------------------------------------------------------------------------- nicknames


def test_nick_change(server, clients):
    a, b = join_all(clients, server, 2)
    old = a.nick
    a.send("/nick Alice")
    a.expect("*** You are now known as Alice")
    b.expect(f"*** {old} is now known as Alice")
    a.send("hi as alice")
    b.expect("Alice: hi as alice")
    server.wait_for_text("Alice: hi as alice")
    # The old name is free again.
    b.send(f"/nick {old}")
    b.expect(f"*** You are now known as {old}")
    a.expect(f"*** {b.nick} is now known as {old}")


def test_nick_unique_ignoring_case(server, clients):
    a, b = join_all(clients, server, 2)
    a.send("/nick Alice")
    a.expect("*** You are now known as Alice")
    b.expect(f"*** {a.nick} is now known as Alice")
    for attempt in ("Alice", "alice", "ALICE"):
        b.send(f"/nick {attempt}")
        b.expect(f"*** Error: nickname {attempt} is already taken")
    a.expect_nothing()
    b.send("still me")
    a.expect(f"{b.nick}: still me")


def test_nick_errors(server, clients):
    a, b = join_all(clients, server, 2)
    a.send("/nick")
    a.expect("*** Error: usage: /nick NAME")
    for bad in ("bad!name", "x" * 33, "dots.are.bad", "ünïcode", "semi;colon"):
        a.send(f"/nick {bad}")
        line = a.line()
        assert line.startswith("*** Error: invalid nickname"), (bad, line)
    # Every allowed character class, and the maximum length.
    for good in ("_-[]{}|^", "x" * 32, "Z9"):
        a.send(f"/nick {good}")
        a.expect(f"*** You are now known as {good}")
    a.send("/who")
    line = a.line()
    assert line.startswith("*** Members of lobby (2): "), line
    assert sorted(line.split(": ", 1)[1].split(" ")) == sorted([b.nick, "Z9"])
    # The others saw only the successful renames.
    renames = b.sync()
    assert [line.split(" is now known as ")[1] for line in renames] == ["_-[]{}|^", "x" * 32, "Z9"], renames


# ---------------------------------------------------------------------------- rooms


def test_join_rooms_and_isolation(server, clients):
    a, b, c = join_all(clients, server, 3)
    b.send("/join blue")
    b.expect("*** You are now in blue")
    a.expect(f"*** {b.nick} left lobby")
    c.expect(f"*** {b.nick} left lobby")
    a.send("lobby only")
    c.expect(f"{a.nick}: lobby only")
    b.send("blue only")  # b is alone in blue: nobody gets it
    for client in (a, b, c):
        client.expect_nothing()
    c.send("/join blue")
    c.expect("*** You are now in blue")
    a.expect(f"*** {c.nick} left lobby")
    b.expect(f"*** {c.nick} joined blue")
    b.send("now two in blue")
    c.expect(f"{b.nick}: now two in blue")
    a.send("still lobby")
    for client in (a, b, c):
        client.expect_nothing()


def test_join_errors(server, clients):
    a = clients(server)
    a.send("/join lobby")
    a.expect("*** You are already in lobby")
    a.send("/join")
    a.expect("*** Error: usage: /join ROOM")
    for bad in ("bad!room", "r" * 33, "sp@ce", "ümlaut"):
        a.send(f"/join {bad}")
        line = a.line()
        assert line.startswith("*** Error: invalid room name"), (bad, line)
    for good in ("_-#.", "r" * 32, "Room9"):
        a.send(f"/join {good}")
        a.expect(f"*** You are now in {good}")
    a.send("/join Room9")
    a.expect("*** You are already in Room9")


def test_rooms_listing_sorted_and_dropped_when_empty(quiet_server, clients):
    server = quiet_server
    a, b, c = join_all(clients, server, 3, presence=False)
    a.send("/rooms")
    assert a.sync() == ["*** lobby (3)"]
    b.send("/join zeta")
    b.expect("*** You are now in zeta")
    c.send("/join alpha")
    c.expect("*** You are now in alpha")
    a.sync()
    a.send("/rooms")
    assert a.sync() == ["*** alpha (1)", "*** lobby (1)", "*** zeta (1)"]
    a.send("/join zeta")
    a.expect("*** You are now in zeta")
    a.send("/rooms")
    assert a.sync() == ["*** alpha (1)", "*** zeta (2)"], "lobby is gone once empty"
    c.send("/join zeta")
    c.expect("*** You are now in zeta")
    a.sync()
    c.send("/rooms")
    assert c.sync() == ["*** zeta (3)"]
    # A room emptied by a disconnect is dropped too.
    d = clients(server)
    d.send("/join temp")
    d.expect("*** You are now in temp")
    d.send("exit")
    d.read_to_eof()
    server.wait_for_text(f"Client 127.0.0.1:{d.port} disconnected")
    a.sync()
    a.send("/rooms")
    assert a.sync() == ["*** zeta (3)"]


def test_who(server, clients):
    a, b, c = join_all(clients, server, 3)
    a.send("/who")
    line = a.line()
    match = re.fullmatch(r"\*\*\* Members of lobby \(3\): (.*)", line)
    assert match, line
    assert sorted(match.group(1).split(" ")) == sorted([a.nick, b.nick, c.nick])
    c.send("/join side")
    c.expect("*** You are now in side")
    c.send("/who")
    c.expect(f"*** Members of side (1): {c.nick}")


def test_who_at_most_fifty_names_a_line(quiet_server, clients):
    group = join_all(clients, quiet_server, 61, presence=False)
    asker = group[0]
    asker.send("/who")
    lines = asker.sync()
    assert len(lines) == 2, lines
    names: list[str] = []
    for line in lines:
        match = re.fullmatch(r"\*\*\* Members of lobby \(61\): (.*)", line)
        assert match, line
        part = match.group(1).split(" ")
        assert 1 <= len(part) <= 50
        names += part
    assert sorted(names) == sorted(client.nick for client in group)


# ------------------------------------------------------------------ other commands


def test_private_message(server, clients):
    a, b, c = join_all(clients, server, 3)
    c.send("/join elsewhere")
    c.expect("*** You are now in elsewhere")
    a.expect(f"*** {c.nick} left lobby")
    b.expect(f"*** {c.nick} left lobby")
    a.send(f"/msg {b.nick} hello there b")
    b.expect(f"*{a.nick}* hello there b")
    a.expect(f"*** To {b.nick}: hello there b")
    # Private messages reach other rooms too.
    a.send(f"/msg {c.nick} across rooms")
    c.expect(f"*{a.nick}* across rooms")
    a.expect(f"*** To {c.nick}: across rooms")
    for client in (a, b, c):
        client.expect_nothing()


def test_private_message_to_oneself_is_only_confirmed(server, clients):
    # The sender of a /msg never gets the *NICK* line, not even when it names itself.
    a = clients(server)
    a.send(f"/msg {a.nick.upper()} note to self")
    a.expect(f"*** To {a.nick}: note to self")
    a.expect_nothing()


def test_private_message_errors(server, clients):
    a = clients(server)
    a.send("/msg nobody-here hi")
    a.expect("*** Error: no such nickname: nobody-here")
    a.send("/msg")
    a.expect("*** Error: usage: /msg NICK text")
    a.send("/msg bob")
    a.expect("*** Error: usage: /msg NICK text")
    a.expect_nothing()


def test_me_action(server, clients):
    a, b, c = join_all(clients, server, 3)
    a.send("/me waves to all")
    b.expect(f"* {a.nick} waves to all")
    c.expect(f"* {a.nick} waves to all")
    a.expect_nothing()


def test_help(server, clients):
    a = clients(server)
    a.send("/help")
    lines = a.sync()
    assert len(lines) >= 3
    assert lines[0] == "*** Commands:"
    assert all(line.startswith("*** ") for line in lines)
    text = "\n".join(lines)
    for command in ("/nick", "/join", "/rooms", "/who", "/msg", "/me", "/help", "/quit"):
        assert command in text, command


def test_stats(server, clients):
    a, b, c = join_all(clients, server, 3)
    c.send("/join beta")
    c.expect("*** You are now in beta")
    a.sync()
    a.send("/stats")
    assert a.sync() == ["*** 3 connected in 2 rooms", "*** beta (1)", "*** lobby (2)"]


def test_unknown_command(server, clients):
    a = clients(server)
    a.send("/foo")
    a.expect(UNKNOWN.format("foo"))
    a.send("/foo with args")
    a.expect(UNKNOWN.format("foo"))
    a.send("still works")  # alone in lobby: no output
    a.expect_nothing()


# ------------------------------------------------------------------- leaving, presence


def test_exit_and_quit(server, clients):
    a, b, c, d = join_all(clients, server, 4)
    a.send("exit")
    assert a.read_to_eof() == []
    for other in (b, c, d):
        other.expect(f"*** {a.nick} quit")
    server.wait_for_text(f"Client 127.0.0.1:{a.port} disconnected")
    b.send("/quit")
    assert b.read_to_eof() == []
    for other in (c, d):
        other.expect(f"*** {b.nick} quit")
    c.send("/quit gone fishing")
    assert c.read_to_eof() == []
    d.expect(f"*** {c.nick} quit (gone fishing)")
    d.expect_nothing()


def test_replies_before_exit_are_delivered_and_later_input_ignored(server, clients):
    a, b = join_all(clients, server, 2)
    # Replies queued before the exit reach the client; lines after it are not acted on,
    # and the unread input does not make the close destroy the replies (no reset).
    a.send_raw(b"/help\r\nlast message\r\nexit\r\nafter exit\r\n/nick Ghost\r\n")
    lines = a.read_to_eof()
    assert lines and lines[0] == "*** Commands:"
    assert all(line.startswith("*** ") for line in lines), lines
    b.expect(f"{a.nick}: last message", f"*** {a.nick} quit")
    b.expect_nothing()


def test_presence_lines(server, clients):
    a, b = join_all(clients, server, 2)  # join_all checks "*** NICK joined lobby"
    b.send("/nick Bob")
    b.expect("*** You are now known as Bob")
    a.expect(f"*** {b.nick} is now known as Bob")
    b.send("/join den")
    b.expect("*** You are now in den")
    a.expect("*** Bob left lobby")
    a.send("/join den")
    a.expect("*** You are now in den")
    b.expect(f"*** {a.nick} joined den")
    b.close()
    line = a.line()
    assert re.fullmatch(r"\*\*\* Bob quit( \(.*\))?", line), line
    a.expect_nothing()


def test_a_burst_of_joins_reaches_each_member_once_in_order(server, clients):
    # Joins that come close together go out in batches (a busy room's presence is held
    # up to limits.PRESENCE_BATCH_S): what each member reads is the same as one by one.
    first = clients(server)
    burst = [clients(server) for _ in range(40)]  # each has read its welcome
    last = burst[-1]
    last.send("here")
    before, line = first.until(lambda line: not line.startswith("*** "))
    assert line == f"{last.nick}: here"
    assert before == [f"*** {c.nick} joined lobby" for c in burst]
    for i, member in enumerate(burst[:-1]):
        before, line = member.until(lambda line: not line.startswith("*** "))
        assert line == f"{last.nick}: here"
        assert before == [f"*** {c.nick} joined lobby" for c in burst[i + 1 :]], member.nick
    for member in [first, *burst]:
        member.expect_nothing()


def test_no_presence(start_server, clients):
    server = start_server("--no-presence")
    a = clients(server)
    b = clients(server)
    b.send("/nick Bob")
    b.expect("*** You are now known as Bob")
    b.send("/join den")
    b.expect("*** You are now in den")
    b.send("/join lobby")
    b.expect("*** You are now in lobby")
    c = clients(server)
    c.send("/quit bye")
    c.read_to_eof()
    b.send("exit")
    b.read_to_eof()
    server.wait_for_text(f"Client 127.0.0.1:{b.port} disconnected")
    server.wait_for_text(f"Client 127.0.0.1:{c.port} disconnected")
    a.expect_nothing()


# ------------------------------------------------------------- framing over real TCP

_LINE_TEXT = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="\x85"),
    max_size=40,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(st.tuples(_LINE_TEXT, st.booleans()), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=1, max_value=2000), max_size=12),
)
def test_any_split_of_the_stream_gives_the_same_lines(start_server, clients, lines, cuts):
    """However the bytes are cut into TCP segments, the same lines are relayed; lines over
    --max-line (here 64 bytes) are refused to the sender alone."""
    server = _framing_server(start_server, clients)
    a, b = server.pair
    stream = b"".join(b"L" + text.encode("utf-8") + (b"\r\n" if crlf else b"\n") for text, crlf in lines)
    positions = sorted({cut % len(stream) for cut in cuts} - {0})
    pieces = [stream[i:j] for i, j in zip([0, *positions], [*positions, len(stream)])]
    for piece in pieces:
        a.send_raw(piece)
        time.sleep(0.001)  # TCP_NODELAY on the client: mostly separate segments
    expected_b: list[str] = []
    expected_a: list[str] = []
    for text, _ in lines:
        if len(("L" + text).encode("utf-8")) > 64:
            expected_a.append("*** Error: line too long (more than 64 bytes); it was discarded")
        else:
            expected_b.append(f"{a.nick}: L{text}")
    assert a.sync() == expected_a
    assert b.sync() == expected_b


def _framing_server(start_server, clients):
    # One server and one pair of clients for every example (hypothesis calls the test many
    # times within one fixture scope); the fixtures still end them at teardown.
    server = getattr(start_server, "framing_server", None)
    if server is None:
        server = start_server("--no-presence", "--max-line", "64")
        a = clients(server)
        b = clients(server)
        a.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.pair = (a, b)
        start_server.framing_server = server
    return server
