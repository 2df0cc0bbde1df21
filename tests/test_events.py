"""chat/events.py: one Event, its encodings (line, line without presence, IRC, IRC with
server-time), cached per event, and its trip over the bus."""

from __future__ import annotations

import re

import pytest

from geventchat.chat import events
from geventchat.core import irc

SRC = ":alice!line@geventchat"


def event(kind, **kwargs):
    fields = {"nick": "alice", "user": "line", "room": "lobby", "texts": (), "target": ""}
    fields.update(kwargs)
    return events.Event(kind, fields["nick"], fields["user"], fields["room"], fields["texts"], fields["target"], when=1.5)


CASES = [
    (
        event(events.CHAT, texts=("hi", "there")),
        b"alice: hi\nalice: there\n",
        f"{SRC} PRIVMSG #lobby :hi\r\n{SRC} PRIVMSG #lobby :there\r\n",
    ),
    (event(events.NOTICE, texts=("n",)), b"alice: n\n", f"{SRC} NOTICE #lobby :n\r\n"),
    (event(events.ACTION, texts=("waves",)), b"* alice waves\n", f"{SRC} PRIVMSG #lobby :\x01ACTION waves\x01\r\n"),
    (event(events.PRIVATE, texts=("psst",), target="bob"), b"*alice* psst\n", f"{SRC} PRIVMSG bob :psst\r\n"),
    (event(events.PRIVATE_NOTICE, texts=("pn",), target="bob"), b"*alice* pn\n", f"{SRC} NOTICE bob :pn\r\n"),
    (
        event(events.PRIVATE_ACTION, texts=("pokes",), target="bob"),
        b"*alice* * alice pokes\n",
        f"{SRC} PRIVMSG bob :\x01ACTION pokes\x01\r\n",
    ),
    (event(events.JOIN, room="#dev"), b"*** alice joined #dev\n", f"{SRC} JOIN ##dev\r\n"),
    (event(events.PART), b"*** alice left lobby\n", f"{SRC} PART #lobby\r\n"),
    (event(events.PART, texts=("bye now",)), b"*** alice left lobby\n", f"{SRC} PART #lobby :bye now\r\n"),
    (event(events.QUIT), b"*** alice quit\n", f"{SRC} QUIT :Quit\r\n"),
    (event(events.QUIT, texts=("gone",)), b"*** alice quit (gone)\n", f"{SRC} QUIT :Quit: gone\r\n"),
    (event(events.NICK, target="alicia"), b"*** alice is now known as alicia\n", f"{SRC} NICK alicia\r\n"),
    (events.raw(b"*** a notice\n"), b"*** a notice\n", ""),
]


@pytest.mark.parametrize(("ev", "line", "irc_text"), CASES, ids=lambda v: repr(v)[:40])
def test_each_kind_in_each_encoding(ev, line, irc_text):
    assert ev.encoded("line") == line
    assert ev.encoded("irc") == irc_text.encode()
    quiet = ev.encoded("line-quiet")
    assert quiet == (b"" if ev.kind in events.PRESENCE else line)
    tagged = ev.encoded("irc-time").decode()
    expected = "".join(f"@time=1970-01-01T00:00:01.500Z {l}\r\n" for l in irc_text.split("\r\n")[:-1])
    assert tagged == expected
    back = events.Event.from_bus(ev.to_bus())
    assert back.encoded("line") == line and back.encoded("irc") == irc_text.encode()


def test_an_encoding_is_made_once_per_event():
    ev = event(events.CHAT, texts=("x",))
    assert ev.encoded("irc") is ev.encoded("irc")


def test_long_texts_and_actions_are_split_within_512_bytes_nothing_cut():
    text = "".join(f"\u00e9t\u00e9{i} " for i in range(800))
    for kind in (events.CHAT, events.ACTION):
        data = event(kind, texts=(text,), nick="n" * 32, room="r" * 32).encoded("irc")
        lines = data.split(b"\r\n")[:-1]
        assert len(lines) > 4 and all(len(line) + 2 <= 512 for line in lines)
        bodies = [irc.parse(line.decode()).params[1] for line in lines]
        if kind == events.ACTION:
            assert all(re.fullmatch("\x01ACTION .*\x01", b, re.S) for b in bodies)
            bodies = [irc.ctcp_action(b) for b in bodies]
        assert "".join(bodies) == text


def test_channel_names():
    assert events.channel("lobby") == "#lobby" and events.channel("#dev") == "##dev"
