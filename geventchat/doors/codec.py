"""What a door supplies: its codec. The line codec (plain lines over a byte stream).

A door is a codec plus a transport over the shared pieces: ``session.Session`` (the
member: outbox, send-queue bound, writer, closing) and ``reader.Reader`` (the read loop,
parking, rate limit, stop). The codec says everything that differs between doors:

* ``start(session)``: what happens as the connection starts (the line and web doors add
  the member to the hub at once, named after its port; an IRC door waits for NICK/USER);
* bytes -> events: ``new_framer(session)`` returns the connection's framer, anything
  with ``receive_data(bytes) -> list[event]`` and an ``in_line`` property (what the line
  timeout watches);
* events -> actions: ``act(session, events)`` carries out one received chunk's events
  in order, through the hub and the command table, and returns the ``protocol.Quit`` if
  the client leaves (then nothing after it is acted on). With ``--rate`` the reader hands
  it one event at a time, waiting for a token before each; it checks ``session.closed``
  after each;
* hub lines -> wire: ``encode(lines)`` turns queued hub lines (the line protocol's bytes,
  each piece one or more lines ending in newline) into the bytes to send; ``reframes``
  says whether that changes their size (then the send queue is corrected);
* ``farewell(session, stopping)``: wire bytes sent last, before the half-close (a
  WebSocket close frame), or ``b""``.

Lines the hub sends a member go through ``session.deliver`` (the line protocol's bytes);
a door whose members need another form for some of them (IRC: hub notices as NOTICEs,
events the hub encoded for it) subclasses ``Session`` (slots for its own state, a
``deliver`` of its own) and leaves ``encode`` alone.

A codec may hold per-connection state (the WebSocket one does) or none (``LINE_CODEC``,
shared by every line connection).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from geventchat.chat import commands
from geventchat.core import protocol, wrongdoor

if TYPE_CHECKING:
    from geventchat.doors.session import Session


class Framer(Protocol):
    def receive_data(self, data: bytes) -> list[Any]: ...

    @property
    def in_line(self) -> bool: ...


class Codec(Protocol):
    door: str  # the front door's name, as the metrics page labels it
    reframes: bool

    def start(self, session: Session) -> None: ...

    def new_framer(self, session: Session) -> Framer: ...

    def act(self, session: Session, events: list[Any]) -> protocol.Quit | None: ...

    def encode(self, lines: list[bytes]) -> bytes: ...

    def farewell(self, session: Session, stopping: bool) -> bytes: ...


class LineCodec:
    """The line protocol: ``protocol.LineFramer``, ``protocol.parse_line``, the command table.

    The chat port's framer checks the first lines for another protocol's opening (an HTTP
    request, IRC registration: ``core.wrongdoor``); such a client is told where to go and
    leaves, nothing it sent relayed. A door whose events are lines of this protocol (the
    WebSocket door: one message, one line) reuses ``start`` and ``act`` and changes the
    framing (without the check: its clients knocked at the right door) and the encoding.
    """

    __slots__ = ()

    door = "line"
    reframes = False

    def start(self, session: Session) -> None:
        session.hub.add(session, str(session.address[1]))

    def new_framer(self, session: Session) -> Framer:
        return wrongdoor.FirstLinesCheck(protocol.LineFramer(session.settings.max_line))

    def encode(self, lines: list[bytes]) -> bytes:
        return lines[0] if len(lines) == 1 else b"".join(lines)

    def farewell(self, session: Session, stopping: bool) -> bytes:
        return b""

    def act_at_once(self, session: Session, events: list[protocol.FramerEvent]) -> int:
        """Carry out what of a chunk never waits and say how many events that was; the
        reader hands the rest to ``act``. It may then run in the loop's callback, without a
        greenlet (``Reader``'s ``acts_in_loop``).

        The leading plain chat lines (``protocol.is_plain_chat``: what ``parse_line`` would
        make a ``Chat``) go to the hub together. When the hub's commands do not wait either
        (``Hub.commands_wait``: no account store, history in memory or none), everything
        up to the client's leaving goes too (a command, an error line); the leaving (exit,
        /quit, a wrong door) is a reader greenlet's."""
        count = protocol.plain_chat_count(events)
        if count:
            session.hub.chat_lines(session, events if count == len(events) else events[:count])  # type: ignore[arg-type]
        if count == len(events) or session.hub.commands_wait:
            return count
        return self._act(session, events, count, in_loop=True)[0]

    def act(self, session: Session, events: list[protocol.FramerEvent]) -> protocol.Quit | None:
        """Carry out the lines of one received chunk, in order; the Quit if the client leaves."""
        return self._act(session, events, 0, in_loop=False)[1]

    def _act(
        self, session: Session, events: list[protocol.FramerEvent], start: int, in_loop: bool
    ) -> tuple[int, protocol.Quit | None]:
        """Carry out ``events[start:]`` in order: how far it got, and the Quit if the client
        leaves. ``in_loop``: stop before the client's leaving (its index is returned).

        Consecutive chat lines go to the hub together, which sends them on as one piece per
        recipient: the per-recipient work (the relay's hot path) is then paid per chunk, not
        per line.
        """
        batch: list[str] = []
        hub = session.hub
        plain_chat = protocol.is_plain_chat
        for index in range(start, len(events)):
            event = events[index]
            if event.__class__ is str and plain_chat(event):
                batch.append(event)
                continue
            request = protocol.parse_line(event) if event.__class__ is str else event
            kind: type = request.__class__
            if kind is protocol.Chat:
                batch.append(request.text)  # type: ignore[union-attr]
                continue
            if batch:
                hub.chat_lines(session, batch)
                batch = []
            if in_loop and (kind is protocol.Quit or kind is wrongdoor.WrongDoor):
                return index, None
            hub.catch_up(session)  # a reply comes after what happened in its room before
            if kind is protocol.Command:
                commands.dispatch(hub, session, request)  # type: ignore[arg-type]
            elif kind is protocol.Invalid:
                session.deliver(protocol.error(request.message))  # type: ignore[union-attr]
            elif kind is protocol.LineTooLong:
                hub.stats.lines_too_long += 1
                session.deliver(protocol.line_too_long(session.settings.max_line))
            elif kind is protocol.Quit:
                return index, request  # type: ignore[return-value]
            elif kind is wrongdoor.WrongDoor:
                _turn_away(session, request.kind)  # type: ignore[union-attr]
                return index, protocol.Quit()
            if session.closed:
                return len(events), None
        if batch:
            hub.chat_lines(session, batch)
        return len(events), None


def _turn_away(session: Session, kind: str) -> None:
    """Tell a client at the wrong door where to go; it leaves (a Quit), nothing it sent
    relayed (the framer gave none of its lines). The welcome went out at connect, before
    the client said anything, so the room sees it join and quit like any short visit."""
    settings = session.settings
    try:
        host = session.sock.getsockname()[0]
    except OSError:
        host = "127.0.0.1"
    session.deliver(
        wrongdoor.wrong_door_error(
            kind, host, web_port=settings.web_port, web_scheme=settings.web_scheme, irc_port=settings.irc_port
        )
    )
    session.drop_reason = wrongdoor.drop_reason(kind)


LINE_CODEC = LineCodec()  # holds no state: one for every line connection
