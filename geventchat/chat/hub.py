"""The hub: who is connected, under which nickname, in which room.

One Hub per server, passed explicitly to whatever needs it (never a module global).
Nicknames and rooms are keyed by their case-folded form; a room exists while it has
members: it is made on first join and dropped when its last member leaves.

The hub never touches a socket. A member is anything with ``nick``, ``room`` and
``deliver(data: bytes)`` (a door's ``doors.session.Session``); ``deliver`` only queues
bytes in the member's bounded outbox, flushed later in the loop turn, so a broadcast to a
thousand members returns without waiting for any of them. What happens in a room is an
``events.Event``, encoded once per wire format (line, IRC) per relay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Protocol

from geventchat.chat import events
from geventchat.chat.stats import Stats
from geventchat.core import limits, protocol
from geventchat.core.history import DEFAULT_REQUEST, HISTORY_OFF, Entry, HistoryStore, HistoryUnavailable, block

if TYPE_CHECKING:
    import gevent.event

    from geventchat.chat.accounts import Accounts

log = logging.getLogger("geventchat")

# The encodings in which a chat event is exactly one line per text (the line protocol's).
LINE_ENCODINGS = frozenset(("line", "line-quiet"))
# The encodings whose members are told no presence (events.encode_line_quiet).
PRESENCE_UNSEEN = frozenset(("line-quiet",))


class Member(Protocol):
    """A member of the chat, whatever its door.

    A line or web member is in exactly one room (``room``). A member with a ``rooms`` dict
    (an IRC user) is in any number of rooms, none at first; its ``room`` stays None.
    Optional attributes, read with defaults: ``encoding`` (the name of its wire format in
    ``events.ENCODERS``, default ``"line"``), ``deliver_encoded`` (where encoded events go,
    default ``deliver``) and ``irc_user`` (its user name as IRC users see it, default
    ``"line"``). ``deliver`` takes the line protocol's bytes (server notices).
    """

    nick: str
    room: Room | None

    def deliver(self, data: bytes) -> None: ...


# A presence event held back (``Hub.call_later``): the event, and the member not to tell.
Held = tuple[events.Event, "Member | None"]


class Room:
    __slots__ = ("name", "key", "members", "groups", "held", "told", "presence_due")

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = protocol.fold(name)
        # A dict keeps join order (for /who) and removes in O(1).
        self.members: dict[Member, None] = {}
        # The same members grouped by encoding, each with the callable its bytes go to: a
        # relay encodes once per group and calls the callables (the hot path).
        self.groups: dict[str, dict[Member, Callable[[bytes], None]]] = {}
        # Presence lines gathered to go out together (Hub.deliver_local), in order; None:
        # none held. Until presence_due (Hub.clock) the next one is held too.
        self.held: list[Held] | None = None
        self.told: dict[Member, int] = {}  # members told the first N of ``held`` already
        self.presence_due = 0.0

    def __repr__(self) -> str:
        return f"<Room {self.name} ({len(self.members)})>"


class HubError(Exception):
    """A request the hub refuses; the text is shown to the member as ``*** Error: ...``."""


def rooms_of(member: Member) -> list[Room]:
    rooms = getattr(member, "rooms", None)
    if rooms is not None:
        return list(rooms.values())
    return [member.room] if member.room is not None else []


class Hub:
    def __init__(
        self,
        *,
        presence: bool = True,
        log_messages: bool = True,
        history: HistoryStore | None = None,
        history_on_join: int = DEFAULT_REQUEST,
        call_later: Callable[[float, Callable[[], None]], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.presence = presence  # tell line and web users about joins, parts, renames, quits
        self.log_messages = log_messages  # one console line per chat message relayed
        self.history = history  # where room lines are kept (contract §10); None: off
        self.history_on_join = history_on_join if history is not None else 0  # lines replayed on entering a room
        self.rooms: dict[str, Room] = {}
        self.members: dict[str, Member] = {}  # folded nickname -> member
        self.stats = Stats()  # counters for the metrics page; the connections add to it too
        self.accounts: Accounts | None = None  # registered nicknames, when the server has a store
        # Set while the connections may read; cleared while the hub cannot keep up with input
        # it must not refuse (a cluster's bus), bounded. None: always open.
        self.input_gate: gevent.event.Event | None = None
        # How the hub runs something later on the server's loop (the assembly gives
        # gevent's); with it, a busy room's presence lines go out in batches
        # (limits.PRESENCE_BATCH_S). None: every line at once.
        self.call_later = call_later
        self.clock = clock
        # Called after chat went to a room's members (the assembly gives the loop's pacer,
        # doors/pacer.py: while chat is relayed busily, a loop turn lasts --turn-ms, so that
        # each member gets one send for many senders' lines). None: nothing.
        self.after_relay: Callable[[], None] | None = None

    # ------------------------------------------------------------------ membership

    def free_nick(self, wanted: str, room: str | None = limits.DEFAULT_ROOM) -> str:
        """``wanted`` if nobody has it, else the first free ``wanted-N``; ``room`` is where
        the new member will be (a cluster hub records it along with the name)."""
        if protocol.fold(wanted) not in self.members:
            return wanted
        for n in range(2, 2 + len(self.members) + 1):
            candidate = f"{wanted[: limits.MAX_NICK - 1 - len(str(n))]}-{n}"
            if protocol.fold(candidate) not in self.members:
                return candidate
        raise AssertionError("unreachable: more candidates than members")

    def add(self, member: Member, wanted_nick: str, room: str | None = limits.DEFAULT_ROOM) -> None:
        """Register a new member under (a free variant of) its nickname, in ``room``, or
        (``room`` None: an IRC user) in no room and without the welcome line."""
        if not protocol.valid_nick(wanted_nick):
            raise ValueError(f"not a valid nickname: {wanted_nick!r}")
        recent = (
            self.recent_lines(room, self.history_on_join) if room is not None else []
        )  # may wait (a store's read): before the name is held
        member.nick = self.free_nick(wanted_nick, room)
        member.room = None
        self.members[protocol.fold(member.nick)] = member
        if room is None:
            return
        entered = self._enter(member, room)
        member.deliver(protocol.welcome(member.nick, room) + block(entered.name, recent))
        self.to_room(member.room, self._event(events.JOIN, member, room), member)

    def add_exact(self, member: Member, nick: str) -> None:
        """Register a member (an IRC user) under exactly ``nick``, in no room; HubError if
        the name is taken (ERR_NICKNAMEINUSE)."""
        if protocol.fold(nick) in self.members or self.free_nick(nick, None) != nick:
            raise HubError(f"nickname {nick} is already taken")
        member.nick = nick
        member.room = None
        self.members[protocol.fold(nick)] = member

    def remove(self, member: Member, reason: str = "", announce: bool = True) -> None:
        """Forget a member that has gone; everyone who shared a room with it is told it
        quit, once."""
        key = protocol.fold(member.nick)
        if self.members.get(key) is not member:
            return  # never added, or removed already
        del self.members[key]
        rooms = rooms_of(member)
        for room in rooms:
            self._leave(member, room)
        if announce and rooms:
            self.to_rooms(rooms, self._event(events.QUIT, member, texts=(reason,) if reason else ()))

    def rename(self, member: Member, new: str, confirm: bool = True) -> None:
        """``confirm``: tell the member (a line user; an IRC door sends its own NICK line)."""
        self.check_registered(member, new)
        if not protocol.valid_nick(new):
            raise HubError(
                f"invalid nickname {protocol.strip_controls(new)[:64]!r}: use 1 to {limits.MAX_NICK} "
                "letters, digits or _-[]{}|^"
            )
        old = member.nick
        new_key, old_key = protocol.fold(new), protocol.fold(old)
        if new_key != old_key and new_key in self.members:
            raise HubError(f"nickname {new} is already taken")
        if new == old:
            if confirm:
                member.deliver(protocol.notice(f"You are already known as {new}"))
            return
        event = self._event(events.NICK, member, target=new)
        del self.members[old_key]
        self.members[new_key] = member
        member.nick = new
        if confirm:
            member.deliver(protocol.notice(f"You are now known as {new}"))
        self.to_rooms(rooms_of(member), event, member)

    @property
    def commands_wait(self) -> bool:
        """Whether carrying out a member's command may wait (on an account store, a history
        read from disk or Redis): then a door runs commands in a greenlet, never in the
        loop's callback."""
        history = self.history
        return self.accounts is not None or (history is not None and history.reads_wait)

    # -------------------------------------------------------------------- accounts

    def check_registered(self, member: Member, new: str) -> None:
        """A registered nickname is taken only by logging in to it (or by its holder
        changing its capitals); every door's rename passes here."""
        key = protocol.fold(new)
        if self.accounts is None or key == protocol.fold(member.nick) or getattr(member, "account", None) == key:
            return
        if protocol.valid_nick(new) and self.accounts.is_registered(new):
            raise HubError(f"nickname {new} is registered; use /login {new} PASSWORD")

    def take_nick(self, member: Member, nick: str) -> None:
        """``member`` logged in to ``nick`` and becomes it: whoever holds it here is logged
        out and renamed to a free name of its port."""
        if member.nick == nick:
            return
        holder = self.members.get(protocol.fold(nick))
        if holder is not None and holder is not member:
            self.evict(holder, nick)
            self.catch_up(member)  # the holder's rename first, then its own
        self.rename(member, nick)

    def free_for_login(self, member: Member, nick: str) -> None:
        """``member``, not registered in the hub yet (an IRC client that logged in with SASL
        or PASS), is about to take ``nick``: whoever holds it gives it up."""
        holder = self.members.get(protocol.fold(nick))
        if holder is not None and holder is not member:
            self.evict(holder, nick)

    def evict(self, holder: Member, nick: str) -> None:
        """``nick`` logged in from another connection: ``holder`` gives the name up."""
        if getattr(holder, "account", None) is not None:
            holder.account = None  # type: ignore[attr-defined]
        holder.deliver(protocol.notice(f"You were logged out: {nick} logged in from another connection"))
        address = getattr(holder, "address", None)
        port = str(address[1]) if address else "guest"
        room = holder.room
        self.force_rename(holder, self.free_nick(port, room.name if room is not None else limits.DEFAULT_ROOM))

    def force_rename(self, member: Member, new: str) -> None:
        """Rename to ``new``, a free name (from ``free_nick``), without the checks of a
        /nick: the server does it, not the member."""
        event = self._event(events.NICK, member, target=new)
        del self.members[protocol.fold(member.nick)]
        self.members[protocol.fold(new)] = member
        member.nick = new
        member.deliver(protocol.notice(f"You are now known as {new}"))
        self.tell_renamed(member, event)
        self.to_rooms(rooms_of(member), event, member)

    def tell_renamed(self, member: Member, event: events.Event) -> None:
        """The server renamed ``member``: a member whose wire format is not the line
        protocol's (an IRC client) is sent the NICK line too, or it would go on using a
        name that is no longer its own (a line member has its ``***`` notice)."""
        if getattr(member, "encoding", "line") != "line":
            self.deliver_event(member, event)

    def join(self, member: Member, name: str) -> None:
        """A line or web member's /join: leave its room, enter ``name``."""
        if not protocol.valid_room(name):
            raise HubError(
                f"invalid room name {protocol.strip_controls(name)[:64]!r}: use 1 to {limits.MAX_ROOM} letters, digits or _-#."
            )
        old = member.room
        if old is not None and old.key == protocol.fold(name):
            member.deliver(protocol.notice(f"You are already in {old.name}"))
            return
        recent = self.recent_lines(name, self.history_on_join)  # may wait: read before leaving
        if self.members.get(protocol.fold(member.nick)) is not member:
            return  # gone while the store was read
        if old is not None:
            self._leave(member, old)
            self.to_room(old, self._event(events.PART, member, old.name))
        room = self._enter(member, name)
        member.deliver(protocol.notice(f"You are now in {room.name}") + block(room.name, recent))
        self.to_room(room, self._event(events.JOIN, member, room.name), member)

    def enter(self, member: Member, name: str) -> Room | None:
        """A multi-room member (IRC JOIN) enters ``name`` as well; everyone there, itself
        included, gets the JOIN. None if it was there already."""
        if not protocol.valid_room(name):
            raise HubError(f"invalid room name {protocol.strip_controls(name)[:64]!r}")
        if protocol.fold(name) in member.rooms:  # type: ignore[attr-defined]
            return None
        room = self._enter(member, name)
        event = self._event(events.JOIN, member, room.name)
        self.deliver_event(member, event)  # at once: its client lists the channel's names next
        self.to_room(room, event, member)
        return room

    def part(self, member: Member, room: Room, reason: str = "") -> None:
        """A multi-room member (IRC PART) leaves ``room``; everyone there, itself included,
        gets the PART."""
        self.to_room(room, self._event(events.PART, member, room.name, (reason,) if reason else ()))
        self._leave(member, room)

    def set_encoding(self, member: Member, encoding: str) -> None:
        """The member's wire format changed (an IRC client negotiated ``server-time``)."""
        member.encoding = encoding  # type: ignore[attr-defined]
        for room in rooms_of(member):
            self._ungroup(member, room)
            self._group(member, room)

    def _enter(self, member: Member, name: str) -> Room:
        key = protocol.fold(name)
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = Room(name)
        room.members[member] = None
        if room.held is not None:
            room.told[member] = len(room.held)  # what is held happened before it came
        self._group(member, room)
        rooms = getattr(member, "rooms", None)
        if rooms is None:
            member.room = room
        else:
            rooms[key] = room
        return room

    def _group(self, member: Member, room: Room) -> None:
        encoding = getattr(member, "encoding", "line")
        if encoding == "line" and not self.presence:
            encoding = "line-quiet"
        put = getattr(member, "deliver_encoded", None) or member.deliver
        room.groups.setdefault(encoding, {})[member] = put

    def _ungroup(self, member: Member, room: Room) -> None:
        for encoding, group in list(room.groups.items()):
            if group.pop(member, None) is not None and not group:
                del room.groups[encoding]

    def _leave(self, member: Member, room: Room | None = None) -> None:
        room = room or member.room
        if room is None:
            return
        if room.held:
            self._tell_held(member, room)  # it was there for them
        room.members.pop(member, None)
        self._ungroup(member, room)
        rooms = getattr(member, "rooms", None)
        if rooms is None:
            member.room = None
        else:
            rooms.pop(room.key, None)
        if not room.members and self.rooms.get(room.key) is room:
            del self.rooms[room.key]

    @staticmethod
    def _event(kind: str, member: Member, room: str = "", texts: tuple[str, ...] = (), target: str = "") -> events.Event:
        return events.Event(kind, member.nick, getattr(member, "irc_user", "line"), room, texts, target)

    # --------------------------------------------------------------------- talking

    def chat(self, member: Member, text: str, room: Room | None = None) -> None:
        self.chat_lines(member, (text,), room)

    def chat_lines(self, member: Member, texts: list[str] | tuple[str, ...], room: Room | None = None) -> None:
        """Chat lines from one member to ``room`` (a line member's: its room), in order,
        sent on as one piece per recipient."""
        nick = member.nick
        room = room or member.room
        self.stats.messages_received += len(texts)
        if self.log_messages:
            for text in texts:
                log.info("%s: %s", nick, text)
        if room is not None:
            self.to_room(room, events.Event(events.CHAT, nick, getattr(member, "irc_user", "line"), room.name, texts), member)
            if self.history is not None:
                self.history.record(room.key, nick, texts)  # only queued: written later, elsewhere
            if self.after_relay is not None:
                self.after_relay()

    def action(self, member: Member, text: str, room: Room | None = None) -> None:
        self.stats.messages_received += 1
        if self.log_messages:
            log.info("* %s %s", member.nick, text)
        room = room or member.room
        if room is not None:
            self.to_room(room, self._event(events.ACTION, member, room.name, (text,)), member)
            if self.history is not None:
                self.history.record(room.key, member.nick, (text,), action=True)
            if self.after_relay is not None:
                self.after_relay()

    # --------------------------------------------------------------------- history

    def recent_lines(self, room_name: str, count: int) -> list[Entry]:
        """The last ``count`` kept lines of a room (oldest first); may wait on the store.
        A store that cannot be read now gives none (a join is never held up by it)."""
        if self.history is None or count < 1:
            return []
        try:
            return self.history.recent(protocol.fold(room_name), count)
        except HistoryUnavailable:
            return []

    def show_history(self, member: Member, count: int) -> None:
        """``/history [N]``: the room's last ``count`` lines as a block, or why there are none."""
        if self.history is None:
            raise HubError(HISTORY_OFF)
        room = member.room
        assert room is not None, "every registered member is in a room"
        try:
            recent = self.history.recent(room.key, count)
        except HistoryUnavailable as exc:
            raise HubError(str(exc)) from None
        if member.room is not room:
            return  # left (or moved on) while the store was read: nothing of that room now
        member.deliver(block(room.name, recent) or protocol.notice(f"No messages in {room.name} yet"))

    def close(self) -> None:
        """Release what the hub holds (its store; a cluster hub also its link)."""
        self.close_history()

    def close_history(self) -> None:
        """The server stops: the store writes what is pending (before ``Server stopped``)."""
        if self.history is not None:
            self.history.close()

    def channel_notice(self, member: Member, text: str, room: Room) -> None:
        """An IRC channel NOTICE: line members see it as chat (``NICK: text``)."""
        self.stats.messages_received += 1
        if self.log_messages:
            log.info("%s: %s", member.nick, text)
        self.to_room(room, self._event(events.NOTICE, member, room.name, (text,)), member)

    def private(self, member: Member, target_nick: str, text: str, kind: str = events.PRIVATE, confirm: bool = True) -> None:
        """A private message (or notice, or action: ``kind``) to ``target_nick``; HubError
        if nobody has that name. ``confirm``: the sender (a line user) gets ``*** To ...``."""
        target = self.members.get(protocol.fold(target_nick))
        if target is None:
            raise HubError(f"no such nickname: {protocol.strip_controls(target_nick)[:64]}")
        if target is not member:
            # A /msg sender never gets the *NICK* line (the contract), so one sent to
            # oneself is only confirmed, like any other.
            self.deliver_event(target, self._event(kind, member, texts=(text,), target=target.nick))
            self.stats.lines_relayed += 1
        if confirm:
            member.deliver(protocol.notice(f"To {target.nick}: {text}"))
            away = getattr(target, "away", "")  # an IRC user's AWAY message
            if away:
                member.deliver(protocol.notice(f"{target.nick} is away: {away}"))

    def deliver_event(self, member: Member, event: events.Event) -> None:
        """One event for one member, in its encoding."""
        encoding = getattr(member, "encoding", "line")
        if encoding == "line" and not self.presence:
            encoding = "line-quiet"
        data = event.encoded(encoding)
        if data:
            (getattr(member, "deliver_encoded", None) or member.deliver)(data)

    def to_room(self, room: Room | None, event: events.Event | bytes, exclude: Member | None = None) -> None:
        """An event for everyone in ``room`` but ``exclude``: chat, actions, presence
        (bytes: line-protocol lines for the line members only).

        Here that is the room's local members; a hub linked to other server processes
        (``cluster.ClusterHub``) also sends the event to the room's members there.
        """
        self.deliver_local(room, event, exclude)

    def to_rooms(self, rooms: list[Room], event: events.Event, exclude: Member | None = None) -> None:
        """An event (a quit, a rename) told once to everyone who is in any of ``rooms``."""
        self.deliver_rooms_local(rooms, event, exclude)

    def deliver_local(self, room: Room | None, event: events.Event | bytes, exclude: Member | None = None) -> None:
        """Queue ``event`` for every member of ``room`` here but ``exclude``, encoded once
        per encoding.

        This is the single way lines reach local members of a room; a message bus linking
        several server processes calls it for events that arrive from the others.

        Presence (joins, parts, quits, renames) may be held a moment to go out with the
        next ones (``call_later``, limits.PRESENCE_BATCH_S); anything else sends what is
        held first, so that every member sees the room's events in the order they came.
        """
        if room is None:
            return
        if isinstance(event, bytes):
            event = events.raw(event)
        if event.kind in events.PRESENCE and self.call_later is not None:
            held = room.held
            if held is None and room.groups.keys() <= PRESENCE_UNSEEN:
                return  # nobody here is told presence (--no-presence, no IRC user): nothing to hold
            if held is not None:
                held.append((event, exclude))
                if len(held) >= limits.PRESENCE_BATCH_MAX:
                    self.send_held(room)  # the newcomers' own cuts grow with the square
                return
            now = self.clock()
            if now < room.presence_due:
                room.held = [(event, exclude)]
                # (A partial, not a lambda: a lambda would make cells of room and self on
                # every call of this method, the relay's hot path.)
                self.call_later(room.presence_due - now, partial(self.send_held, room))
                return
            room.presence_due = now + limits.PRESENCE_BATCH_S
        elif room.held:
            self.send_held(room)
        self._deliver_now(room, event, exclude)

    def _deliver_now(self, room: Room, event: events.Event, exclude: Member | None) -> None:
        stats = self.stats
        chat = event.kind == events.CHAT
        for encoding, group in room.groups.items():
            data = event.encoded(encoding)
            if not data:
                continue
            # Counted once per group, as lines times recipients (never per delivery); chat
            # for line members is one line per text, no need to scan the bytes for them.
            lines = len(event.texts) if chat and encoding in LINE_ENCODINGS else data.count(b"\n")
            stats.lines_relayed += lines * (len(group) - (exclude in group))
            for recipient, put in group.items():
                if recipient is not exclude:
                    put(data)

    def send_held(self, room: Room) -> None:
        """Send the presence lines held for ``room``: one piece per member, each member
        told only what happened after it entered and not what it did itself."""
        held = room.held
        if held is None:
            return
        room.held = None
        room.presence_due = self.clock() + limits.PRESENCE_BATCH_S
        told, room.told = room.told, {}
        # Members that need their own cut: those that acted in this batch, and those that
        # entered during it or were told a part of it already (``told``).
        own = {exclude for _event, exclude in held if exclude is not None}
        own.update(told)
        stats = self.stats
        for encoding, group in room.groups.items():
            pieces = [event.encoded(encoding) for event, _exclude in held]
            whole = b"".join(pieces)
            if not whole:
                continue
            lines = whole.count(b"\n")
            for recipient, put in group.items():
                if recipient in own:
                    data = self._cut(recipient, held, pieces, told.get(recipient, 0))
                    if data:
                        stats.lines_relayed += data.count(b"\n")
                        put(data)
                else:
                    stats.lines_relayed += lines
                    put(whole)

    @staticmethod
    def _cut(member: Member, held: list[Held], pieces: list[bytes], start: int = 0, offset: int = 0) -> bytes:
        """What of ``held[start:]`` ``member`` is told: not its own doings. ``start`` is
        ``room.told``'s mark: where it entered (``_enter``) or what it was told already.
        ``pieces[i - offset]`` is ``held[i]`` encoded."""
        return b"".join(pieces[i - offset] for i in range(start, len(held)) if held[i][1] is not member)

    def catch_up(self, member: Member) -> None:
        """Tell ``member`` now what is held for it (its command's reply comes next, after
        everything that happened in its rooms before it)."""
        for room in rooms_of(member):
            if room.held:
                self._tell_held(member, room)

    def _tell_held(self, member: Member, room: Room) -> None:
        """Tell ``member`` its part of what ``room`` holds, now (it leaves the room, or
        waits for a reply)."""
        held = room.held or []
        start = room.told.get(member, 0)
        room.told[member] = len(held)
        if start == len(held):
            return  # told everything already (a storm's commands come here often)
        for encoding, group in room.groups.items():
            put = group.get(member)
            if put is not None:
                # Only the part not told yet is encoded.
                pieces = [event.encoded(encoding) for event, _exclude in held[start:]]
                data = self._cut(member, held, pieces, start, offset=start)
                if data:
                    self.stats.lines_relayed += data.count(b"\n")
                    put(data)
                return

    def deliver_rooms_local(self, rooms: list[Room], event: events.Event, exclude: Member | None = None) -> None:
        if len(rooms) == 1:
            self.deliver_local(rooms[0], event, exclude)
            return
        for room in rooms:  # told at once (once to each member): what was held goes first
            self.send_held(room)
        everyone: dict[str, dict[Member, Callable[[bytes], None]]] = {}
        for room in rooms:
            for encoding, group in room.groups.items():
                everyone.setdefault(encoding, {}).update(group)
        union = Room("")
        union.groups = everyone
        self._deliver_now(union, event, exclude)

    def broadcast(self, data: bytes) -> None:
        """Queue ``data`` for every member in every room (server notices)."""
        for member in list(self.members.values()):
            member.deliver(data)

    def begin_stop(self) -> None:
        """The server is stopping: every member is being told so and sent away (after
        the presence lines held for it)."""
        for room in list(self.rooms.values()):
            self.send_held(room)

    # ------------------------------------------------------------------- listings

    def room_counts(self) -> list[tuple[str, int]]:
        return sorted(((room.name, len(room.members)) for room in self.rooms.values()), key=lambda rc: protocol.fold(rc[0]))

    def nicks_in(self, room: Room) -> list[str]:
        return [member.nick for member in room.members]


def chunked(items: Iterable[str], size: int) -> list[list[str]]:
    items = list(items)
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]
