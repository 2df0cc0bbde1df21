"""Protocol fuzzing: framing, parsing and every command handler, on arbitrary input.

Hypothesis drives bytes (random, or built from real commands with hostile arguments),
split into arbitrary chunks, through the server's own pipeline without sockets:
``LineFramer.receive_data`` -> ``parse_line`` -> ``commands.dispatch`` / ``Hub`` on a hub
whose members are plain objects. Nothing may raise, and after every step:

* the hub is consistent (every member in exactly one room, under its folded nickname,
  rooms non-empty and keyed by their folded name, nicknames and rooms valid);
* everything sent to anyone is valid UTF-8, whole lines ending in ``\\n``, with no
  control character other than TAB (no terminal escape survives);
* the framer holds at most ``max_line + 1`` bytes of an unfinished line.

``GEVENTCHAT_FUZZ_EXAMPLES`` raises the number of examples (default 300 per test).
"""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geventchat.chat import commands
from geventchat.chat.hub import Hub
from geventchat.core import protocol

EXAMPLES = int(os.environ.get("GEVENTCHAT_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CONTROL_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


class FakeMember:
    """A member as the hub sees it; checks every piece it is sent."""

    def __init__(self) -> None:
        self.nick = ""
        self.room = None
        self.received = 0

    def deliver(self, data: bytes) -> None:
        assert isinstance(data, bytes) and data.endswith(b"\n"), data[:100]
        text = data.decode("utf-8")  # raises on invalid UTF-8
        for line in text[:-1].split("\n"):
            assert not CONTROL_RE.search(line), line[:200]
        self.received += 1


def check_hub(hub: Hub, members: list[FakeMember]) -> None:
    in_rooms = [m for room in hub.rooms.values() for m in room.members]
    assert len(in_rooms) == len(set(map(id, in_rooms))) == len(members)
    for key, room in hub.rooms.items():
        assert room.members, "an empty room was kept"
        assert key == protocol.fold(room.name) and protocol.valid_room(room.name)
        for member in room.members:
            assert member.room is room
    assert len(hub.members) == len(members)
    for key, member in hub.members.items():
        assert key == protocol.fold(member.nick) and protocol.valid_nick(member.nick)
        assert member in members


def act(hub: Hub, member: FakeMember, event: protocol.FramerEvent, max_line: int) -> bool:
    """What codec.LineCodec.act does with one framer event; False once the member quits."""
    if isinstance(event, protocol.LineTooLong):
        assert event.size > max_line
        member.deliver(protocol.line_too_long(max_line))
        return True
    assert isinstance(event, str)
    assert len(event.encode("utf-8")) <= max_line * 3  # U+FFFD may stand for one byte
    assert not CONTROL_RE.search(event)
    request = protocol.parse_line(event)
    if isinstance(request, protocol.Chat):
        hub.chat(member, request.text)
    elif isinstance(request, protocol.Command):
        assert request.name in commands.HANDLERS
        commands.dispatch(hub, member, request)
    elif isinstance(request, protocol.Invalid):
        member.deliver(protocol.error(request.message))
    elif isinstance(request, protocol.Quit):
        return False
    else:
        assert request is None
    return True


# Lines made of real commands with hostile arguments, mixed with raw bytes.
NAMES = sorted(protocol.COMMAND_SPECS) + ["", "x", "NICK", "Join", "msg", "quitx"]
hostile_text = st.lists(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\x1b[2J", "\x00", "\r", "\t", " ", "/", "\u202e", "\x9b", "é", "\ud7ff", "#", ".", "-", "\n"]),
    ),
    max_size=60,
).map("".join)


@st.composite
def command_line(draw) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        text = "/" + draw(st.sampled_from(NAMES)) + draw(st.sampled_from(["", " ", "  "])) + draw(hostile_text)
    elif kind == 1:
        text = (
            "/"
            + draw(st.sampled_from(["nick", "join", "msg"]))
            + " "
            + draw(st.text(alphabet="abcXYZ019_-[]{}|^#.", min_size=0, max_size=40))
            + draw(st.sampled_from(["", " hi", " " + "x" * 40]))
        )
    elif kind == 2:
        text = draw(st.sampled_from(["exit", " exit ", "//", "//x", "/", "/quit", "/quit bye"]))
    else:
        text = draw(hostile_text)
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        raw += draw(st.binary(max_size=20))  # invalid UTF-8 too
    return raw + draw(st.sampled_from([b"\n", b"\r\n", b"\r\r\n"]))


stream = st.one_of(
    st.binary(max_size=3000),
    st.lists(command_line(), max_size=40).map(b"".join),
    st.lists(st.one_of(command_line(), st.binary(max_size=200)), max_size=30).map(b"".join),
)


@st.composite
def chunked(draw):
    data = draw(stream)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    pieces, last = [], 0
    for cut in cuts + [len(data)]:
        pieces.append(data[last:cut])
        last = cut
    return pieces


@FUZZ
@given(chunks=chunked(), max_line=st.sampled_from([1, 2, 8, 40, 4096]), presence=st.booleans())
def test_pipeline_never_raises(chunks, max_line, presence):
    hub = Hub(presence=presence, log_messages=False)
    members = []
    for nick in ("alice", "Bob", "carol"):
        member = FakeMember()
        hub.add(member, nick)
        members.append(member)
    hub.join(members[2], "#side")
    fuzzed = FakeMember()
    hub.add(fuzzed, "12345")
    members.append(fuzzed)
    framer = protocol.LineFramer(max_line)
    active = True
    for chunk in chunks:
        for event in framer.receive_data(chunk):
            if active:
                active = act(hub, fuzzed, event, max_line)
            check_hub(hub, members)
        assert framer.buffered <= max_line + 1
    hub.remove(fuzzed, "bye")
    members.remove(fuzzed)
    check_hub(hub, members)


@FUZZ
@given(lines=st.lists(st.tuples(st.integers(0, 2), command_line()), max_size=60))
def test_several_members_interleaved(lines):
    """Three fuzzed members take turns: renames, joins and messages between them."""
    hub = Hub(log_messages=False)
    members = []
    for nick in ("1000", "1001", "1002"):
        member = FakeMember()
        hub.add(member, nick)
        members.append(member)
    framers = [protocol.LineFramer(200) for _ in members]
    gone = set()
    for who, raw in lines:
        if who in gone:
            continue
        member = members[who]
        for event in framers[who].receive_data(raw):
            if not act(hub, member, event, 200):
                hub.remove(member)
                gone.add(who)
                break
        check_hub(hub, [m for i, m in enumerate(members) if i not in gone])


@FUZZ
@given(text=st.text(max_size=300))
def test_parse_line_any_text(text):
    request = protocol.parse_line(text)
    assert request is None or isinstance(request, (protocol.Chat, protocol.Quit, protocol.Command, protocol.Invalid))
    if isinstance(request, protocol.Command):
        spec = protocol.COMMAND_SPECS[request.name]
        assert spec.min_args <= len(request.args) <= spec.max_args


@FUZZ
@given(data=st.binary(max_size=2000))
def test_client_side_classify_and_show(data):
    """What the terminal client does with server lines: never raises, always safe."""
    framer = protocol.LineFramer(64 * 1024)
    for event in framer.receive_data(data + b"\n"):
        if isinstance(event, str):
            shown = protocol.terminal_safe(event)
            assert "\x1b" not in shown and "\x9b" not in shown
            protocol.classify(event)
