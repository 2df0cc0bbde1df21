"""The line codec (doors/codec.py): a received chunk's events become hub actions, in order,
chat lines batched into one piece per recipient; hub lines go out as they are."""

from __future__ import annotations

from geventchat.chat.hub import Hub
from geventchat.core import protocol
from geventchat.core.config import Settings
from geventchat.doors.codec import LINE_CODEC


class Member:
    """What the codec and the hub use of a session, recording what it is sent."""

    def __init__(self, hub: Hub, nick: str, settings: Settings | None = None) -> None:
        self.hub = hub
        self.settings = settings or Settings()
        self.nick = ""
        self.room = None
        self.closed = False
        self.pieces: list[bytes] = []
        hub.add(self, nick)
        self.pieces.clear()  # the welcome

    def deliver(self, data: bytes) -> None:
        self.pieces.append(data)


def test_consecutive_chat_lines_reach_each_recipient_as_one_piece_and_a_command_splits_them():
    hub = Hub(presence=False, log_messages=False)
    alice, bob = Member(hub, "alice"), Member(hub, "bob")
    assert LINE_CODEC.act(alice, ["one", "two", "/me waves", "three"]) is None
    assert bob.pieces == [b"alice: one\nalice: two\n", b"* alice waves\n", b"alice: three\n"]
    assert alice.pieces == []


def test_a_quit_ends_the_chunk_and_later_lines_are_not_acted_on():
    hub = Hub(presence=False, log_messages=False)
    alice, bob = Member(hub, "alice"), Member(hub, "bob")
    outcome = LINE_CODEC.act(alice, ["before", "/quit gone fishing", "after"])
    assert outcome == protocol.Quit("gone fishing")
    assert bob.pieces == [b"alice: before\n"]


def test_bad_lines_get_an_error_for_the_sender_alone_and_the_chunk_goes_on():
    hub = Hub(presence=False, log_messages=False)
    alice, bob = Member(hub, "alice", Settings(max_line=10)), Member(hub, "bob")
    assert LINE_CODEC.act(alice, [protocol.LineTooLong(50), "/nosuch", "still here"]) is None
    assert alice.pieces == [protocol.line_too_long(10), protocol.error(protocol.parse_line("/nosuch").message)]  # type: ignore[union-attr]
    assert bob.pieces == [b"alice: still here\n"]
    assert hub.stats.lines_too_long == 1


def test_a_session_closed_while_acting_stops_the_chunk():
    hub = Hub(presence=False, log_messages=False)
    alice, bob = Member(hub, "alice"), Member(hub, "bob")

    def deliver_and_close(data: bytes) -> None:  # as a send queue drop would
        alice.pieces.append(data)
        alice.closed = True

    alice.deliver = deliver_and_close  # type: ignore[method-assign]
    assert LINE_CODEC.act(alice, ["/who", "never relayed"]) is None
    assert len(alice.pieces) == 1 and alice.pieces[0].startswith(b"*** Members of lobby")
    assert bob.pieces == []


def test_hub_lines_go_out_as_they_are():
    line = b"alice: hi\n"
    assert LINE_CODEC.encode([line]) is line  # one piece: no copy
    assert LINE_CODEC.encode([line, b"bob: yo\n"]) == b"alice: hi\nbob: yo\n"
    assert LINE_CODEC.reframes is False
