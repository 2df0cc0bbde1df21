"""The sans-IO IRC module: the community's parser vectors, framing fed whole and byte by
byte, CTCP ACTION, and the splitting of long lines."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parser_tests import data as vectors

from geventchat.core import irc

# ------------------------------------------------------------ the community's vectors


@pytest.mark.parametrize("case", vectors.msg_split["tests"], ids=lambda c: c["input"][:60])
def test_parser_vectors_split(case):
    message = irc.parse(case["input"])
    atoms = case["atoms"]
    assert message.tags == atoms.get("tags", {}) or (not message.tags and not atoms.get("tags"))
    assert message.source == atoms.get("source")
    assert message.command == atoms["verb"].upper()
    assert list(message.params) == atoms.get("params", [])


@pytest.mark.parametrize("case", vectors.msg_join["tests"], ids=lambda c: c.get("desc", "")[:60])
def test_parser_vectors_join(case):
    atoms = case["atoms"]
    message = irc.Message(atoms["verb"], tuple(atoms.get("params", [])), atoms.get("source"), atoms.get("tags") or {})
    assert str(message) in case["matches"]
    # And what we write reads back as the same atoms.
    assert irc.parse(str(message)) == irc.Message(atoms["verb"].upper(), message.params, message.source, message.tags)


@pytest.mark.parametrize("case", vectors.userhost_split["tests"], ids=lambda c: c["source"])
def test_parser_vectors_userhost(case):
    atoms = case["atoms"]
    assert irc.split_source(case["source"]) == (atoms.get("nick", ""), atoms.get("user", ""), atoms.get("host", ""))


# ------------------------------------------------------------------------ messages


def test_encode_puts_a_colon_only_where_needed_and_ends_in_crlf():
    assert irc.Message("PRIVMSG", ("#lobby", "hi")).encode() == b"PRIVMSG #lobby hi\r\n"
    assert irc.Message("PRIVMSG", ("#lobby", "hi there"), "a!b@c").encode() == b":a!b@c PRIVMSG #lobby :hi there\r\n"
    assert irc.Message("PRIVMSG", ("#lobby", ":)")).encode() == b"PRIVMSG #lobby ::)\r\n"
    assert irc.Message("AWAY", ("",)).encode() == b"AWAY :\r\n"


def test_tags_are_escaped_and_unescaped():
    message = irc.Message("PRIVMSG", ("#a", "x"), tags={"time": "2026-01-01T00:00:00.000Z", "k": "a; b\\c\r\n"})
    line = str(message)
    assert line.startswith("@time=2026-01-01T00:00:00.000Z;k=a\\:\\sb\\\\c\\r\\n ")
    assert irc.parse(line) == message


def test_parse_refuses_a_line_without_command():
    for line in ("", "   ", ":src", "@a=b", "@a=b :src"):
        with pytest.raises(irc.ParseError):
            irc.parse(line)


def test_numerics_are_named():
    assert irc.RPL_WELCOME == "001" and irc.RPL_ISUPPORT == "005"
    assert irc.ERR_NOTREGISTERED == "451" and irc.ERR_NICKNAMEINUSE == "433" and irc.ERR_INVALIDCAPCMD == "410"


# ------------------------------------------------------------------------- framing


STREAM = (
    b"CAP LS 302\r\nNICK alice\nUSER a 0 * :Alice A\r\n\r\n"
    b"@label=1 PRIVMSG #lobby :\x01ACTION waves\x01\r\n"
    b"PRIVMSG #lobby :h\xc3\xa9llo \xff\r\n"
)
EXPECTED = [
    irc.Message("CAP", ("LS", "302")),
    irc.Message("NICK", ("alice",)),
    irc.Message("USER", ("a", "0", "*", "Alice A")),
    irc.Message("PRIVMSG", ("#lobby", "\x01ACTION waves\x01"), tags={"label": "1"}),
    irc.Message("PRIVMSG", ("#lobby", "h\u00e9llo \ufffd")),
]


def drain(conn):
    out = []
    while (event := conn.next_event()) is not irc.NEED_DATA:
        out.append(event)
    return out


def test_framing_whole():
    conn = irc.IrcConnection()
    conn.receive_data(STREAM)
    assert drain(conn) == EXPECTED
    assert not conn.in_line


def test_framing_one_byte_at_a_time():
    conn = irc.IrcConnection()
    got = []
    for i in range(len(STREAM)):
        conn.receive_data(STREAM[i : i + 1])
        got += conn.events()
    assert got == EXPECTED


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=12))
def test_framing_any_cuts(cuts):
    conn = irc.IrcConnection()
    points = sorted(set(cuts)) + [len(STREAM)]
    start = 0
    for point in points:
        conn.receive_data(STREAM[start:point])
        start = point
    assert drain(conn) == EXPECTED


def test_a_line_over_512_bytes_is_discarded_whole_and_the_next_is_read():
    conn = irc.IrcConnection()
    long_line = b"PRIVMSG #lobby :" + b"x" * 600 + b"\r\n"
    conn.receive_data(long_line + b"PING :x\r\n")
    events = conn.events()
    assert isinstance(events[0], irc.InputTooLong) and events[1] == irc.Message("PING", ("x",))
    # Byte by byte too: it never holds more than the limit.
    for byte in long_line:
        conn.receive_data(bytes([byte]))
        assert len(conn._partial or b"") <= conn.max_line + conn.max_tags
    assert isinstance(conn.events()[0], irc.InputTooLong)


def test_510_bytes_plus_crlf_fit_and_tags_do_not_count():
    line = b"PRIVMSG #lobby :" + b"x" * (510 - 16)
    assert len(line) == 510
    conn = irc.IrcConnection()
    conn.receive_data(b"@" + b"t" * 4000 + b" " + line + b"\r\n")
    conn.receive_data(line + b"x\r\n")
    events = conn.events()
    assert isinstance(events[0], irc.Message) and isinstance(events[1], irc.InputTooLong)


def test_a_line_without_command_is_an_event_not_an_exception():
    conn = irc.IrcConnection()
    conn.receive_data(b":onlysource\r\nPING x\r\n")
    events = conn.events()
    assert isinstance(events[0], irc.ParseError) and events[1].command == "PING"


def test_send_encodes():
    assert irc.IrcConnection.send(irc.Message("PONG", ("srv", "tok"))) == b"PONG srv tok\r\n"


# ---------------------------------------------------------------------------- CTCP


def test_ctcp_action():
    assert irc.ctcp_action("\x01ACTION waves\x01") == "waves"
    assert irc.ctcp_action("\x01ACTION waves") == "waves"  # some clients omit the closing \x01
    assert irc.ctcp_action("hello") is None
    assert irc.ctcp_action("\x01VERSION\x01") is None
    assert irc.action("waves") == "\x01ACTION waves\x01"


# ----------------------------------------------------------------------- splitting


@given(st.text(min_size=0, max_size=3000), st.integers(min_value=4, max_value=600))
def test_split_text_keeps_everything_and_fits(text, budget):
    pieces = irc.split_text(text, budget)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= budget for p in pieces)
    assert all(pieces) or pieces == [""]


def test_a_3000_byte_line_becomes_privmsgs_of_at_most_512_bytes():
    text = ("w\u00f6rd " * 500)[:2000]
    source, target = "alice!line@geventchat", "#lobby"
    budget = irc.privmsg_budget(source, "PRIVMSG", target)
    lines = [irc.Message("PRIVMSG", (target, piece), source).encode() for piece in irc.split_text(text, budget)]
    assert len(b"".join(lines)) > 2000 and len(lines) >= 5
    assert all(len(line) <= 512 for line in lines)
    assert "".join(irc.parse(line[:-2].decode()).params[1] for line in lines) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("AB:# @;=x\t")), max_size=30))
def test_the_short_way_parses_as_the_long_way(line):
    """parse() takes lines without tags or source and with single spaces apart in one
    split; a leading space sends the same line the long way: both give the same Message."""
    if line[:1] == " ":
        return
    try:
        short = irc.parse(line)
    except irc.ParseError:
        with pytest.raises(irc.ParseError):
            irc.parse(" " + line)
        return
    assert irc.parse(" " + line) == short
    assert (short.command, short.params, short.source, short.tags) == (
        short.command.upper(),
        tuple(short.params),
        short.source,
        dict(short.tags),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        short.command = "X"  # type: ignore[misc]
