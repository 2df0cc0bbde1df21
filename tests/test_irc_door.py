"""The IRC front door (contract §12) over real sockets: raw IRC sockets, the jaraco ``irc``
client library, and line users on the chat port, against a real server process."""

from __future__ import annotations

import re
import socket
import ssl
import time

import pytest
import trustme
from conftest import HOST, WAIT, ChatClient, Closed

IRC_LISTENING_RE = re.compile(r"IRC listening on 127\.0\.0\.1:(\d+)$")
PREFIX_RE = re.compile(r"^(?:@\S+ )?:(\S+) ")


def irc_port(server) -> int:
    line = server.wait_for(lambda l: IRC_LISTENING_RE.search(l) is not None)
    return int(IRC_LISTENING_RE.search(line).group(1))


class IrcRaw(ChatClient):
    """A raw IRC connection: lines must end in \\r\\n; ``sync`` uses PING/PONG."""

    _tokens = 0

    def __init__(self, port: int, **kwargs) -> None:
        super().__init__(port, welcome=False, **kwargs)
        self.nick = "*"

    def line(self, timeout: float | None = None) -> str:
        raw = self.line_bytes(timeout)
        assert raw.endswith(b"\r"), f"an IRC line not ending in \\r\\n: {raw!r}"
        assert len(raw) + 1 <= 512 or raw.startswith(b"@"), f"longer than 512 bytes: {raw!r}"
        return raw[:-1].decode("utf-8")

    def send(self, *lines: str) -> None:
        self.sock.sendall(b"".join(line.encode() + b"\r\n" for line in lines))

    def register(self, nick: str, user: str = "user") -> list[str]:
        self.send(f"NICK {nick}", f"USER {user} 0 * :Real {nick}")
        before, last = self.until(lambda l: f" 422 {nick} " in l or f" 376 {nick} " in l)
        self.nick = nick
        return before + [last]

    def sync(self, timeout: float | None = None) -> list[str]:
        IrcRaw._tokens += 1
        token = f"sync{IrcRaw._tokens}"
        self.send(f"PING {token}")
        before, _ = self.until(
            lambda l: l.endswith(f"PONG geventchat {token}") or l.endswith(f"PONG geventchat :{token}"), timeout
        )
        return before

    def expect_nothing(self) -> None:
        extra = self.sync()
        assert extra == [], f"{self.nick}: unexpected lines {extra!r}"

    def joined(self, channel: str) -> list[str]:
        self.send(f"JOIN {channel}")
        before, last = self.until(lambda l: f" 366 {self.nick} {channel} " in l)
        return before + [last]


@pytest.fixture
def door(start_server):
    """Factory: a server with --irc-port 0 (and extra flags); returns (server, irc port)."""

    def start(*flags: str):
        server = start_server("--irc-port", "0", *flags)
        return server, irc_port(server)

    return start


@pytest.fixture
def connect():
    made: list[ChatClient] = []

    def make(port: int, kind=IrcRaw, **kwargs):
        client = kind(port, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def text_of(line: str) -> str:
    return line.split(" :", 1)[1] if " :" in line else line.rsplit(" ", 1)[1]


def in_lobby(connect, port):
    """Two IRC users, bob and carol, registered and in #lobby (carol joined last)."""
    bob, carol = connect(port), connect(port)
    bob.register("bob")
    carol.register("carol")
    bob.joined("#lobby")
    carol.joined("#lobby")
    return bob, carol


# ------------------------------------------------------------------ registration


def test_console_line_and_registration_burst(door, connect):
    server, port = door()
    assert server.count_text(f"IRC listening on 127.0.0.1:{port}") == 1
    bob = connect(port)
    lines = bob.register("bob")
    numerics = [line.split()[1] for line in lines]
    assert numerics == ["001", "002", "003", "004", "005", "422"]
    assert lines[0].startswith(":geventchat 001 bob :") and "bob!~user@geventchat" in lines[0]
    assert lines[3].split()[3:] == ["geventchat", lines[3].split()[4], "i", "nt"] and lines[3].split()[4].startswith(
        "geventchat-"
    )
    for token in ("CHANTYPES=#", "NICKLEN=32", "CHANNELLEN=33", "CASEMAPPING=ascii"):
        assert token in lines[4].split()
    assert "127.0.0.1" not in "\n".join(lines)


def test_lf_only_input_is_accepted_and_pass_is_ignored(door, connect):
    _, port = door()
    bob = connect(port)
    bob.send_raw(b"PASS whatever\nNICK bob\nUSER u 0 * :Bob\n")
    before, _ = bob.until(lambda l: " 422 bob " in l)
    assert before[0].startswith(":geventchat 001 bob ")


def test_cap_negotiation(door, connect):
    _, port = door()
    bob = connect(port)
    bob.send("CAP LS 302", "NICK bob", "USER u 0 * :Bob")
    assert bob.line() == ":geventchat CAP * LS :server-time message-tags batch draft/chathistory"
    bob.expect_nothing()  # registration waits for CAP END
    bob.send("CAP REQ :server-time no-such-cap", "CAP FROB", "CAP REQ :server-time message-tags", "CAP LIST")
    assert bob.line() == ":geventchat CAP * NAK :server-time no-such-cap"
    assert bob.line() == ":geventchat 410 * FROB :Invalid CAP command"
    assert bob.line() == ":geventchat CAP * ACK :server-time message-tags"
    assert bob.line() == ":geventchat CAP * LIST :message-tags server-time"
    bob.send("CAP END")
    assert bob.line().startswith(":geventchat 001 bob ")
    bob.until(lambda l: " 422 " in l)
    bob.nick = "bob"
    joined = bob.joined("#lobby")
    assert re.match(r"^@time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z :bob!~u@geventchat JOIN #lobby$", joined[0])


def test_commands_before_registration_get_451(door, connect):
    _, port = door()
    bob = connect(port)
    bob.send("JOIN #lobby", "PRIVMSG #lobby :hi", "FOO")
    assert [bob.line().split()[1] for _ in range(3)] == ["451", "451", "451"]


# -------------------------------------------------------------------- ping, quit


def test_ping_pong_both_ways_and_ping_timeout(door, connect):
    server, port = door("--irc-ping-interval", "1")
    line_user = connect(server.port, ChatClient)
    bob, carol = in_lobby(connect, port)
    bob.send("PING :hello there")
    assert bob.until(lambda l: "PONG" in l)[1] == ":geventchat PONG geventchat :hello there"
    bob.send("PING")
    assert bob.until(lambda l: " 409 " in l)[1] == ":geventchat 409 bob :No origin specified"
    # carol answers the server's pings; bob does not
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        try:
            line = carol.line(timeout=0.2)
        except AssertionError:
            continue
        if line == "PING geventchat":
            carol.send("PONG geventchat")
        if "QUIT" in line:
            break
    assert line == ":bob!~user@geventchat QUIT :Quit: Ping timeout"
    got = bob.read_to_eof(timeout=WAIT)
    assert "PING geventchat" in got and got[-1] == "ERROR :Closing Link: geventchat (Ping timeout)"
    line_user.until(lambda l: l == "*** bob quit (Ping timeout)")
    server.wait_for(lambda l: "disconnected (Ping timeout)" in l)
    carol.expect_nothing()  # still here


def test_quit_says_error_then_closes_and_others_see_the_quit(door, connect):
    server, port = door()
    line_user = connect(server.port, ChatClient)
    bob, carol = connect(port), connect(port)
    bob.register("bob")
    carol.register("carol")
    for channel in ("#lobby", "#a", "#b"):  # carol shares three channels with bob: one QUIT
        bob.joined(channel)
        carol.joined(channel)
    line_user.until(lambda l: l == "*** carol joined lobby")
    bob.sync()
    bob.send("QUIT :see you")
    assert bob.read_to_eof() == ["ERROR :Closing Link: geventchat (Quit: see you)"]
    assert carol.sync() == [":bob!~user@geventchat QUIT :Quit: see you"]
    line_user.until(lambda l: l == "*** bob quit (see you)")


# --------------------------------------------------------------- chat across doors


def test_a_line_user_and_an_irc_user_chat(door, connect):
    server, port = door()
    alice = connect(server.port, ChatClient)
    bob = connect(port)
    bob.register("bob")
    names = bob.joined("#lobby")
    assert names[0] == ":bob!~user@geventchat JOIN #lobby"
    assert names[1] == f":geventchat 353 bob = #lobby :{alice.nick} bob"
    alice.expect("*** bob joined lobby")
    alice.send("hello irc", "/me waves", "/msg bob psst")
    assert bob.lines(3) == [
        f":{alice.nick}!line@geventchat PRIVMSG #lobby :hello irc",
        f":{alice.nick}!line@geventchat PRIVMSG #lobby :\x01ACTION waves\x01",
        f":{alice.nick}!line@geventchat PRIVMSG bob :psst",
    ]
    bob.send(
        "PRIVMSG #lobby :hello line",
        "PRIVMSG #lobby :\x01ACTION nods\x01",
        "NOTICE #lobby :a notice",
        f"PRIVMSG {alice.nick} :private",
        f"NOTICE {alice.nick} :private notice",
        f"PRIVMSG {alice.nick} :\x01ACTION pokes\x01",
    )
    bob.expect_nothing()  # nothing comes back to the sender
    assert alice.sync() == [
        "*** To bob: psst",
        "bob: hello line",
        "* bob nods",
        "bob: a notice",
        "*bob* private",
        "*bob* private notice",
        "*bob* * bob pokes",
    ]
    server.wait_for_text("bob: hello line")


def test_irc_users_see_each_other_and_presence_as_irc(door, connect):
    server, port = door()
    alice = connect(server.port, ChatClient)
    bob, carol = connect(port), connect(port)
    bob.register("bob")
    carol.register("carol", user="cc")
    bob.joined("#lobby")
    carol.joined("#lobby")
    assert bob.sync() == [":carol!~cc@geventchat JOIN #lobby"]
    alice.send("/nick alicia", "/join other", "/join lobby")
    assert bob.lines(3) == [
        f":{alice.nick}!line@geventchat NICK alicia",
        ":alicia!line@geventchat PART #lobby",
        ":alicia!line@geventchat JOIN #lobby",
    ]
    carol.sync()
    carol.send("NICK caroline")
    assert carol.sync() == [":carol!~cc@geventchat NICK caroline"]
    assert bob.sync()[-1] == ":carol!~cc@geventchat NICK caroline"
    carol.send("PART #lobby :later")
    assert carol.sync() == [":caroline!~cc@geventchat PART #lobby :later"]
    assert bob.sync()[-1] == ":caroline!~cc@geventchat PART #lobby :later"
    alice.until(lambda l: l == "*** caroline left lobby")


def test_chat_and_commands_in_one_chunk_are_carried_out_in_order(door, connect):
    """The chat at the head of a chunk is relayed in the loop, the rest by a reader: in order
    all the same, for the channel and for the sender."""
    server, port = door()
    alice = connect(server.port, ChatClient)
    bob, carol = in_lobby(connect, port)
    assert bob.sync() == [":carol!~user@geventchat JOIN #lobby"]
    alice.until(lambda l: l == "*** carol joined lobby")
    bob.send(
        "PRIVMSG #lobby :one",
        "PRIVMSG #lobby :two",
        "AWAY :gone",
        "PRIVMSG #lobby :three",
        "PRIVMSG #elsewhere :lost",
        "PRIVMSG #lobby :\x01ACTION waves\x01",
        "PRIVMSG #lobby :four",
        "PART #lobby :bye",
    )
    # bob's replies first: once bob has its PONG, all it sent is carried out (carol's PING,
    # sent after that, is answered after everything relayed to her)
    assert bob.sync() == [
        ":geventchat 306 bob :You have been marked as being away",
        ":geventchat 403 bob #elsewhere :No such channel",
        ":bob!~user@geventchat PART #lobby :bye",
    ]
    assert carol.sync() == [
        ":bob!~user@geventchat PRIVMSG #lobby :one",
        ":bob!~user@geventchat PRIVMSG #lobby :two",
        ":bob!~user@geventchat PRIVMSG #lobby :three",
        ":bob!~user@geventchat PRIVMSG #lobby :\x01ACTION waves\x01",
        ":bob!~user@geventchat PRIVMSG #lobby :four",
        ":bob!~user@geventchat PART #lobby :bye",
    ]
    assert alice.lines(6) == ["bob: one", "bob: two", "bob: three", "* bob waves", "bob: four", "*** bob left lobby"]


def test_room_with_hash_is_a_double_hash_channel(door, connect):
    server, port = door()
    alice = connect(server.port, ChatClient)
    alice.send("/join #dev")
    alice.expect("*** You are now in #dev")
    bob = connect(port)
    bob.register("bob")
    names = bob.joined("##dev")
    assert names[0] == ":bob!~user@geventchat JOIN ##dev" and names[1].endswith(f"##dev :{alice.nick} bob")
    alice.expect("*** bob joined #dev")
    bob.send("PRIVMSG ##dev :in dev")
    alice.expect("bob: in dev")
    alice.send("back")
    assert bob.line() == f":{alice.nick}!line@geventchat PRIVMSG ##dev :back"


def test_join_lists_and_zero_part_and_several_rooms(door, connect):
    server, port = door()
    alice = connect(server.port, ChatClient)
    bob = connect(port)
    bob.register("bob")
    bob.send("JOIN #a,#b,#lobby")
    got = bob.sync()
    assert [l for l in got if " JOIN " in l] == [f":bob!~user@geventchat JOIN #{r}" for r in ("a", "b", "lobby")]
    assert sum(" 366 " in l for l in got) == 3
    alice.expect("*** bob joined lobby")
    alice.send("/rooms")
    assert alice.sync() == ["*** a (1)", "*** b (1)", "*** lobby (2)"]
    bob.send("JOIN 0")
    assert sorted(bob.sync()) == sorted(f":bob!~user@geventchat PART #{r}" for r in ("a", "b", "lobby"))
    alice.expect("*** bob left lobby")
    alice.send("/rooms")
    assert alice.sync() == ["*** lobby (1)"]


def test_a_3000_byte_line_arrives_as_several_privmsgs_nothing_cut(door, connect):
    server, port = door()
    alice = connect(server.port, ChatClient)
    bob = connect(port)
    bob.register("bob")
    bob.joined("#lobby")
    text = "".join(f"w\u00f6rd{i} " for i in range(600))[:3000].strip()
    assert len(text.encode()) > 3000
    alice.send(text)
    before, last = bob.until(lambda l: l.endswith(text[-20:]))
    got = before + [last]
    prefix = f":{alice.nick}!line@geventchat PRIVMSG #lobby :"
    assert len(got) >= 7 and all(l.startswith(prefix) for l in got)
    assert "".join(l[len(prefix) :] for l in got) == text


def test_nick_clash_across_doors(door, connect):
    server, port = door()
    alice = connect(server.port, ChatClient)
    bob = connect(port)
    bob.send(f"NICK {alice.nick.upper() if alice.nick.isalpha() else alice.nick}", "USER u 0 * :x")
    assert bob.line().split()[1:3] == ["433", "*"]
    lines = bob.register("bob")
    assert lines[0].split()[1] == "001"
    alice.send("/nick BOB")
    alice.expect("*** Error: nickname BOB is already taken")
    carol = connect(port)
    carol.register("carol")
    carol.send(f"NICK {alice.nick}", "NICK Bob")
    assert [carol.line().split()[1] for _ in range(2)] == ["433", "433"]


def test_no_presence_quiets_line_users_only(door, connect):
    server, port = door("--no-presence")
    alice = connect(server.port, ChatClient)
    bob, carol = in_lobby(connect, port)
    carol.send("QUIT")
    assert bob.until(lambda l: "QUIT" in l) == ([":carol!~user@geventchat JOIN #lobby"], ":carol!~user@geventchat QUIT :Quit")
    alice.expect_nothing()
    bob.send("PRIVMSG #lobby :chat still")
    alice.expect("bob: chat still")


# ------------------------------------------------------------------ queries


def test_names_topic_who_whois_list_mode_away(door, connect):
    server, port = door()
    alice = connect(server.port, ChatClient)
    bob, carol = in_lobby(connect, port)
    bob.sync()
    bob.send("NAMES #lobby")
    assert bob.sync() == [
        f":geventchat 353 bob = #lobby :{alice.nick} bob carol",
        ":geventchat 366 bob #lobby :End of /NAMES list",
    ]
    bob.send("TOPIC #lobby", "TOPIC #lobby :new")
    assert bob.sync() == [":geventchat 331 bob #lobby :No topic is set", ":geventchat 482 bob #lobby :Topics cannot be set here"]
    bob.send("WHO #lobby")
    who = bob.sync()
    assert who[0] == f":geventchat 352 bob #lobby line geventchat geventchat {alice.nick} H :0 {alice.nick}"
    assert who[2] == ":geventchat 352 bob #lobby ~user geventchat geventchat carol H :0 Real carol"
    assert who[-1] == ":geventchat 315 bob #lobby :End of /WHO list"
    bob.send("WHOIS carol")
    assert bob.sync() == [
        ":geventchat 311 bob carol ~user geventchat * :Real carol",
        ":geventchat 319 bob carol #lobby",
        ":geventchat 312 bob carol geventchat geventchat",
        ":geventchat 318 bob carol :End of /WHOIS list",
    ]
    alice.send("/join other")
    alice.until(lambda l: l == "*** You are now in other")
    bob.send("LIST")
    assert bob.sync()[-4:] == [
        ":geventchat 321 bob Channel :Users  Name",
        ":geventchat 322 bob #lobby 2 :",
        ":geventchat 322 bob #other 1 :",
        ":geventchat 323 bob :End of /LIST",
    ]
    bob.send("MODE #lobby", "MODE #lobby b", "MODE bob", "MODE bob +i")
    assert bob.sync() == [
        ":geventchat 324 bob #lobby +nt",
        ":geventchat 368 bob #lobby :End of channel ban list",
        ":geventchat 221 bob +",
    ]
    carol.sync()
    carol.send("AWAY :lunch")
    assert carol.sync() == [":geventchat 306 carol :You have been marked as being away"]
    alice.send("/msg carol hello?")
    alice.expect("*** To carol: hello?", "*** carol is away: lunch")
    assert carol.line() == f":{alice.nick}!line@geventchat PRIVMSG carol :hello?"
    bob.send("PRIVMSG carol :there?")
    assert bob.sync() == [":geventchat 301 bob carol lunch"]
    carol.send("AWAY")
    assert carol.sync() == [
        ":bob!~user@geventchat PRIVMSG carol :there?",
        ":geventchat 305 carol :You are no longer marked as being away",
    ]
    assert "127.0.0.1" not in "".join(who)


def test_error_numerics(door, connect):
    server, port = door()
    connect(server.port, ChatClient)
    bob = connect(port)
    bob.register("bob")
    bob.send(
        "PRIVMSG nobody :x",  # 401
        "JOIN lobby",  # 403 (not a channel)
        "PART #lobby",  # 403 (no such channel: nobody... lobby exists: 442)
        "PING",  # 409
        "FROB",  # 421
        "NICK",  # 431
        "NICK 9*bad",  # 432
        "JOIN",  # 461
        "USER a b c :d",  # 462
    )
    got = [line.split()[1] for line in bob.sync()]
    assert got == ["401", "403", "442", "409", "421", "431", "432", "461", "462"]
    bob.send("PART #nowhere", "PRIVMSG #nowhere :x", "PRIVMSG #lobby :not joined")
    assert [line.split()[1] for line in bob.sync()] == ["403", "403", "404"]
    bob.send("PRIVMSG #lobby")
    assert [line.split()[1] for line in bob.sync()] == ["412"]


def test_a_line_over_512_bytes_gets_417_and_the_connection_stays(door, connect):
    server, port = door()
    alice = connect(server.port, ChatClient)
    bob = connect(port)
    bob.register("bob")
    bob.joined("#lobby")
    alice.expect("*** bob joined lobby")
    bob.send("PRIVMSG #lobby :" + "x" * 600)
    assert bob.sync() == [":geventchat 417 bob :Input line was too long"]
    bob.send("PRIVMSG #lobby :short")
    alice.expect("bob: short")


def test_control_characters_are_removed_from_what_is_relayed(door, connect):
    server, port = door()
    alice = connect(server.port, ChatClient)
    bob = connect(port)
    bob.register("bob")
    bob.joined("#lobby")
    alice.expect("*** bob joined lobby")
    bob.send("PRIVMSG #lobby :\x02bold\x02 \x1b[31mred\x037,3 colour")
    alice.expect("bob: bold [31mred7,3 colour")


# ------------------------------------------------------------------ limits, TLS


def test_a_client_that_never_reads_is_dropped_others_unaffected(door, connect):
    server, port = door("--max-sendq", "262144", "--quiet")
    alice = connect(server.port, ChatClient)
    stuck = connect(port, rcvbuf=4096)
    stuck.register("stuck")
    stuck.joined("#lobby")
    bob = connect(port)
    bob.register("bob")
    bob.joined("#lobby")
    alice.until(lambda l: l == "*** bob joined lobby")
    prefix = f":{alice.nick}!line@geventchat PRIVMSG #lobby :"
    dropped = False
    for batch in range(100):  # bob reads as it goes; stuck never reads
        texts = [f"{batch:02d}{i:02d}" + "y" * 3996 for i in range(10)]
        alice.send(*texts)
        received = ""
        while len(received) < sum(map(len, texts)):
            line = bob.line()
            if line.startswith(":stuck!"):
                assert line == ":stuck!~user@geventchat QUIT :Quit: send queue exceeded"
                dropped = True
                continue
            assert line.startswith(prefix)
            received += line[len(prefix) :]
        assert received == "".join(texts)
        if dropped:
            break
    assert dropped
    server.wait_for(lambda l: "disconnected (send queue exceeded)" in l)


def test_per_address_limit_and_idle_timeout(door, connect):
    server, port = door("--max-per-ip", "2", "--idle-timeout", "1")
    first, second = connect(port), connect(port)
    third = connect(port)
    assert third.read_to_eof() == ["ERROR :Closing Link: geventchat (too many connections from your address)"]
    server.wait_for(lambda l: "disconnected (idle timeout)" in l, timeout=10)
    with pytest.raises(Closed):
        first.line(timeout=5)
    with pytest.raises(Closed):
        second.line(timeout=5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = trustme.CA()
    d = tmp_path_factory.mktemp("irc-pki")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    return d


def test_tls_with_certfile(door, connect, pki):
    server, port = door("--certfile", str(pki / "cert.pem"), "--keyfile", str(pki / "key.pem"))
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    sock = context.wrap_socket(socket.socket(socket.AF_INET, socket.SOCK_STREAM), server_hostname="127.0.0.1")
    bob = connect(port, sock=sock)
    assert bob.register("bob")[0].startswith(":geventchat 001 bob ")
    plain = connect(port)
    plain.send("NICK x")
    with pytest.raises(Closed):
        plain.line(timeout=WAIT)


def test_stop_tells_irc_users_and_exits(door, connect):
    server, port = door()
    bob = connect(port)
    bob.register("bob")
    server.stop()
    assert bob.read_to_eof()[-1] == ":geventchat NOTICE bob :Server shutting down"
    assert server.count_text("Server stopped") == 1


def test_irc_port_in_use_is_one_line(start_server, run_server_command=None):
    from conftest import run_server_command as run

    holder = socket.socket()
    holder.bind((HOST, 0))
    holder.listen()
    try:
        result = run("--port", "0", "--irc-port", str(holder.getsockname()[1]))
    finally:
        holder.close()
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    assert str(holder.getsockname()[1] if False else "") in result.stderr


# --------------------------------------------------------- a real client library


def test_the_jaraco_irc_client_chats_with_a_line_user(door, connect):
    import irc.client

    server, port = door()
    alice = connect(server.port, ChatClient)
    reactor = irc.client.Reactor()
    seen: list[tuple[str, str, str]] = []
    welcomed: list[bool] = []
    conn = reactor.server().connect(HOST, port, "jaraco", username="jr", ircname="Jaraco Client")
    conn.add_global_handler("welcome", lambda c, e: (welcomed.append(True), c.join("#lobby")))
    for kind in ("pubmsg", "action", "privmsg", "join"):
        conn.add_global_handler(kind, lambda c, e, kind=kind: seen.append((kind, e.source.nick, (e.arguments or [""])[0])))

    def pump_until(predicate, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            reactor.process_once(0.05)
        assert predicate(), seen

    try:
        pump_until(lambda: ("join", "jaraco", "") in seen or any(k == "join" for k, *_ in seen))
        alice.expect("*** jaraco joined lobby")
        alice.send("hi jaraco", "/me waves", "/msg jaraco secret")
        pump_until(lambda: len([s for s in seen if s[0] != "join"]) >= 3)
        assert [s for s in seen if s[0] != "join"] == [
            ("pubmsg", alice.nick, "hi jaraco"),
            ("action", alice.nick, "waves"),
            ("privmsg", alice.nick, "secret"),
        ]
        conn.privmsg("#lobby", "hello from jaraco")
        conn.action("#lobby", "bows")
        conn.privmsg(alice.nick, "just you")
        reactor.process_once(0.1)
        alice.expect("*** To jaraco: secret", "jaraco: hello from jaraco", "* jaraco bows", "*jaraco* just you")
        conn.quit("done")
        reactor.process_once(0.1)
        alice.expect("*** jaraco quit (done)")
    finally:
        conn.close()


def test_metrics_count_clients_by_door(door, connect):
    from test_metrics import metrics_port, wait_metric

    server, port = door("--metrics-port", "0")
    connect(server.port, ChatClient)
    bob, carol = connect(port), connect(port)
    bob.register("bob")
    carol.register("carol")
    mport = metrics_port(server)
    samples = wait_metric(mport, "geventchat_door_clients_connected{door=irc}", lambda v: v == 2)
    assert samples["geventchat_door_clients_connected{door=line}"] == 1
    assert samples["geventchat_door_clients_connected{door=web}"] == 0
    assert samples["geventchat_clients_connected"] == 3
    carol.send("QUIT")
    carol.read_to_eof()
    wait_metric(mport, "geventchat_door_clients_connected{door=irc}", lambda v: v == 1)


# ----------------------------------------------------------------------- history


def test_join_replays_recent_lines_tagged_or_as_notices(door, connect):
    server, port = door("--history-on-join", "3")
    alice = connect(server.port, ChatClient)
    alice.send("one", "two", "/me three", "four")
    alice.sync()
    tagged = connect(port)
    tagged.send("CAP REQ :server-time", "CAP END")
    tagged.register("tagged")
    lines = tagged.joined("#lobby")
    replay = tagged.sync()
    assert lines[-1].endswith(" 366 tagged #lobby :End of /NAMES list")
    stamp = r"@time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
    assert [re.sub(stamp, "", line) for line in replay] == [
        f":{alice.nick}!line@geventchat PRIVMSG #lobby :two",
        f":{alice.nick}!line@geventchat PRIVMSG #lobby :\x01ACTION three\x01",
        f":{alice.nick}!line@geventchat PRIVMSG #lobby :four",
    ]
    assert all(re.match(stamp, line) for line in replay)
    plain = connect(port)
    plain.register("plain")
    plain.joined("#lobby")
    notices = plain.sync()
    date = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] "
    assert [re.sub(date, "", line) for line in notices] == [
        f":geventchat NOTICE #lobby :{alice.nick}: two",
        f":geventchat NOTICE #lobby :* {alice.nick} three",
        f":geventchat NOTICE #lobby :{alice.nick}: four",
    ]
    plain.send("PRIVMSG #lobby :from irc")
    alice.until(lambda l: l == "plain: from irc")
    late = connect(server.port, ChatClient, welcome=False)
    late.line()
    block = late.lines(5)
    assert block[0] == "*** Recent messages in lobby (3):" and block[3].endswith("] plain: from irc")


# ---------------------------------------------------------------------- accounts


def register_account(server, nick: str, password: str) -> None:
    owner = ChatClient(server.port)
    try:
        owner.send(f"/nick {nick}", f"/register {password}")
        owner.until(lambda l: l == f"*** {nick} is now registered and you are logged in", timeout=20)
    finally:
        owner.close()


def test_sasl_plain_and_pass_log_in_and_registered_names_are_protected(door, connect, tmp_path):
    import base64

    server, port = door("--db", str(tmp_path / "chat.db"))
    register_account(server, "Dana", "correct-horse")
    register_account(server, "Erin", "battery-staple")
    # SASL PLAIN
    dana = connect(port)
    dana.send("CAP LS 302")
    assert dana.line() == ":geventchat CAP * LS :server-time message-tags batch draft/chathistory sasl=PLAIN"
    dana.send("CAP REQ :sasl", "NICK dana", "USER d 0 * :Dana", "AUTHENTICATE PLAIN")
    assert dana.line() == ":geventchat CAP * ACK sasl"
    assert dana.line() == "AUTHENTICATE +"
    dana.send("AUTHENTICATE " + base64.b64encode(b"\0Dana\0correct-horse").decode())
    assert dana.line(timeout=20) == ":geventchat 900 * * Dana :You are now logged in as Dana"
    assert dana.line() == ":geventchat 903 * :SASL authentication successful"
    dana.send("CAP END")
    assert dana.until(lambda l: " 900 " in l)[1] == ":geventchat 900 dana dana!~d@geventchat dana :You are now logged in as dana"
    # a wrong SASL password
    wrong = connect(port)
    wrong.send("CAP REQ :sasl", "AUTHENTICATE PLAIN")
    wrong.until(lambda l: l == "AUTHENTICATE +")
    wrong.send("AUTHENTICATE " + base64.b64encode(b"Erin\0Erin\0nope-nope-nope").decode())
    assert wrong.line(timeout=20) == ":geventchat 904 * :SASL authentication failed: wrong nickname or password"
    # PASS for the NICK's account
    erin = connect(port)
    erin.send("PASS battery-staple")
    lines = erin.register("Erin")
    assert lines[0].startswith(":geventchat 001 Erin ")
    assert erin.until(lambda l: " 900 " in l)[1].endswith(":You are now logged in as Erin")
    # a wrong PASS: the registered name is refused
    thief = connect(port)
    thief.send("PASS guess-guess", "NICK erin", "USER t 0 * :t")
    assert thief.line(timeout=20).startswith(":geventchat 464 * :Password incorrect")
    assert thief.line() == ":geventchat 433 * erin :nickname erin is registered; use /login erin PASSWORD"
    # and a rename to it, on this door too
    thief.send("NICK thief")
    thief.until(lambda l: " 422 thief " in l)
    thief.nick = "thief"
    thief.send("NICK Dana")
    assert thief.line().startswith(":geventchat 433 thief Dana :nickname Dana is registered")


def test_chathistory_latest_and_before(door, connect):
    server, port = door("--history-on-join", "0")
    alice = connect(server.port, ChatClient)
    alice.send(*[f"line {i}" for i in range(7)])
    alice.sync()
    # Not a synchronisation: lines 7 to 9 get a later timestamp than the others (the memory
    # store gives the lines of each quarter of a second one time).
    time.sleep(0.6)
    alice.send(*[f"line {i}" for i in range(7, 10)])
    alice.sync()
    bob = connect(port)
    bob.send("CAP REQ :draft/chathistory batch server-time", "CAP END")
    bob.register("bob")
    bob.joined("#lobby")
    bob.send("CHATHISTORY LATEST #lobby * 3")
    got = bob.sync()
    assert re.fullmatch(r":geventchat BATCH \+(\S+) chathistory #lobby", got[0]) and got[-1].startswith(":geventchat BATCH -")
    ref = got[0].split()[2][1:]
    stamp = rf"@batch={ref};time=(\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z) "
    assert [re.sub(stamp, "", line) for line in got[1:-1]] == [
        f":{alice.nick}!line@geventchat PRIVMSG #lobby :line {i}" for i in (7, 8, 9)
    ]
    oldest = re.match(stamp, got[1]).group(1)
    bob.send(f"CHATHISTORY BEFORE #lobby timestamp={oldest} 2")
    before = bob.sync()
    assert [line.rsplit(" :", 1)[1] for line in before[1:-1]] == ["line 5", "line 6"]
    bob.send("CHATHISTORY AROUND #lobby * 3", "CHATHISTORY LATEST bob * 3")
    assert [line.split()[1:3] for line in bob.sync()] == [["FAIL", "CHATHISTORY"], ["FAIL", "CHATHISTORY"]]


# ----------------------------------------------------------------------- a cluster


def test_irc_users_across_a_redis_cluster(start_server, connect):
    from redis_fixture import RedisServer, shutil

    redis = RedisServer(shutil.which("redis-server"))
    redis.start()
    try:
        first = start_server("--redis-url", redis.url, "--irc-port", "0")
        second = start_server("--redis-url", redis.url, "--irc-port", "0")
        alice = connect(second.port, ChatClient)  # a line user on the second process
        bob, carol = connect(irc_port(first)), connect(irc_port(second))
        bob.register("bob")
        carol.register("carol")
        for channel in ("#lobby", "#x"):
            bob.joined(channel)
            carol.joined(channel)
        seen: set[str] = set()  # bob's join comes from the other process: in either order
        while seen != {"*** bob joined lobby", "*** carol joined lobby"}:
            seen.add(alice.until(lambda l: l in ("*** bob joined lobby", "*** carol joined lobby"))[1])
        bob.until(lambda l: l == ":carol!~user@geventchat JOIN #x")
        bob.send("NAMES #lobby")
        (names,) = [line for line in bob.sync() if " 353 " in line]
        assert set(names.split(":", 2)[2].split()) == {alice.nick, "bob", "carol"}
        alice.send("across", "/me waves")
        assert bob.lines(2) == [
            f":{alice.nick}!line@geventchat PRIVMSG #lobby :across",
            f":{alice.nick}!line@geventchat PRIVMSG #lobby :\x01ACTION waves\x01",
        ]
        bob.send("PRIVMSG #lobby :back", f"PRIVMSG {alice.nick} :private", "PRIVMSG carol :to carol")
        alice.expect("bob: back", "*bob* private")
        assert carol.until(lambda l: "to carol" in l)[1] == ":bob!~user@geventchat PRIVMSG carol :to carol"
        bob.send("NICK robert")
        assert carol.until(lambda l: " NICK " in l)[1] == ":bob!~user@geventchat NICK robert"
        alice.until(lambda l: l == "*** bob is now known as robert")
        bob.send("QUIT :bye")
        bob.read_to_eof()
        assert carol.until(lambda l: " QUIT " in l)[1] == ":robert!~user@geventchat QUIT :Quit: bye"
        carol.expect_nothing()  # told once, though robert and carol shared two rooms
        alice.until(lambda l: l == "*** robert quit (bye)")
    finally:
        redis.stop()


def test_irc_door_with_workers(start_server, connect):
    from redis_fixture import RedisServer, shutil

    redis = RedisServer(shutil.which("redis-server"))
    redis.start()
    try:
        server = start_server("--redis-url", redis.url, "--workers", "2", "--irc-port", "0", start_timeout=30)
        port = irc_port(server)
        assert server.count_text(f"IRC listening on 127.0.0.1:{port}") == 1  # said once, by the parent
        alice = connect(server.port, ChatClient)
        users = [connect(port) for _ in range(6)]  # spread over both workers by the kernel
        for i, user in enumerate(users):
            user.register(f"irc{i}")
            user.joined("#lobby")
        # Each join is told once; joins made on different workers may arrive in any order
        # (only each sender's own lines are ordered across processes).
        expected = {f"*** irc{i} joined lobby" for i in range(6)}
        seen: list[str] = []
        while not expected.issubset(seen):
            seen.append(alice.until(lambda l: l.endswith(" joined lobby"))[1])
        assert sorted(seen) == sorted(expected), seen
        users[0].send("PRIVMSG #lobby :to everyone")
        alice.until(lambda l: l == "irc0: to everyone")
        for user in users[1:]:
            user.until(lambda l: l == ":irc0!~user@geventchat PRIVMSG #lobby :to everyone")
        assert server.stop() == 0
    finally:
        redis.stop()


def test_an_irc_user_whose_name_is_taken_by_a_login_is_told_its_new_nick(door, connect, tmp_path):
    import base64

    server, port = door("--db", str(tmp_path / "chat.db"))
    register_account(server, "Dana", "correct-horse")
    dana = connect(port)
    dana.send("CAP REQ :sasl", "AUTHENTICATE PLAIN")
    dana.until(lambda l: l == "AUTHENTICATE +")
    dana.send("AUTHENTICATE " + base64.b64encode(b"\0Dana\0correct-horse").decode())
    dana.until(lambda l: " 903 " in l, timeout=20)
    dana.send("CAP END")
    dana.register("Dana")
    dana.joined("#lobby")
    other = connect(server.port, ChatClient)
    other.send("/login Dana correct-horse")
    other.until(lambda l: l == "*** You are now logged in as Dana", timeout=20)
    got = dana.until(lambda l: " NICK " in l)
    port_name = str(dana.sock.getsockname()[1])
    assert got[1] == f":Dana!~user@geventchat NICK {port_name}"
    assert ":geventchat NOTICE Dana :You were logged out: Dana logged in from another connection" in got[0]


def test_a_sasl_login_takes_the_name_from_its_holder_on_another_process(start_server, connect):
    import base64

    from redis_fixture import RedisServer, shutil

    redis = RedisServer(shutil.which("redis-server"))
    redis.start()
    try:
        first = start_server("--redis-url", redis.url, "--irc-port", "0")
        second = start_server("--redis-url", redis.url)
        register_account(second, "Dana", "correct-horse")
        holder = connect(second.port, ChatClient)
        holder.send("/login Dana correct-horse")
        holder.until(lambda l: l == "*** You are now logged in as Dana", timeout=20)
        dana = connect(irc_port(first))
        dana.send("CAP REQ :sasl", "AUTHENTICATE PLAIN")
        dana.until(lambda l: l == "AUTHENTICATE +")
        dana.send("AUTHENTICATE " + base64.b64encode(b"\0Dana\0correct-horse").decode())
        dana.until(lambda l: " 903 " in l, timeout=20)
        dana.send("CAP END")
        assert dana.register("Dana")[0].startswith(":geventchat 001 Dana ")
        holder.until(lambda l: l == "*** You were logged out: Dana logged in from another connection")
    finally:
        redis.stop()


def test_rate_throttles_an_irc_client_without_dropping_anything(door, connect):
    server, port = door("--rate", "10", "--burst", "2")
    alice = connect(server.port, ChatClient)
    bob = connect(port)
    bob.register("bob")
    bob.joined("#lobby")
    alice.expect("*** bob joined lobby")
    started = time.monotonic()
    bob.send(*[f"PRIVMSG #lobby :n{i}" for i in range(20)])
    assert alice.lines(20, timeout=15) == [f"bob: n{i}" for i in range(20)]
    assert time.monotonic() - started >= 1.0  # 20 lines at 10 a second, 2 at once: read more slowly
