"""The hub: who is connected, under which nickname, in which room.

One Hub per server, passed explicitly to whatever needs it (never a module global).
Nicknames and rooms are keyed by their case-folded form; a room exists while it has
members: it is made on first join and dropped when its last member leaves.

The hub never touches a socket. A member is anything with ``nick``, ``room`` and
``deliver(data: bytes)``; ``deliver`` only queues bytes (see ``connection.Outbox``), so a
broadcast to a thousand members returns without waiting for any of them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from geventchat.chat.stats import Stats
from geventchat.core import limits, protocol
from geventchat.core.history import DEFAULT_REQUEST, HISTORY_OFF, Entry, HistoryStore, block

if TYPE_CHECKING:
    from geventchat.chat.accounts import Accounts

log = logging.getLogger("geventchat")


class Member(Protocol):
    nick: str
    room: Room | None

    def deliver(self, data: bytes) -> None: ...


class Room:
    __slots__ = ("name", "key", "members")

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = protocol.fold(name)
        # A dict keeps join order (for /who) and removes in O(1).
        self.members: dict[Member, None] = {}

    def __repr__(self) -> str:
        return f"<Room {self.name} ({len(self.members)})>"


class HubError(Exception):
    """A request the hub refuses; the text is shown to the member as ``*** Error: ...``."""


class Hub:
    def __init__(
        self,
        *,
        presence: bool = True,
        log_messages: bool = True,
        history: HistoryStore | None = None,
        history_on_join: int = DEFAULT_REQUEST,
    ) -> None:
        self.presence = presence  # tell the others about joins, parts, renames, quits
        self.log_messages = log_messages  # one console line per chat message relayed
        self.history = history  # where room lines are kept (contract §10); None: off
        self.history_on_join = history_on_join if history is not None else 0  # lines replayed on entering a room
        self.rooms: dict[str, Room] = {}
        self.members: dict[str, Member] = {}  # folded nickname -> member
        self.stats = Stats()  # counters for the metrics page; the connections add to it too
        self.accounts: Accounts | None = None  # registered nicknames, when the server has a store

    # ------------------------------------------------------------------ membership

    def free_nick(self, wanted: str, room: str = limits.DEFAULT_ROOM) -> str:
        """``wanted`` if nobody has it, else the first free ``wanted-N``; ``room`` is where
        the new member will be (a cluster hub records it along with the name)."""
        if protocol.fold(wanted) not in self.members:
            return wanted
        for n in range(2, 2 + len(self.members) + 1):
            candidate = f"{wanted[: limits.MAX_NICK - 1 - len(str(n))]}-{n}"
            if protocol.fold(candidate) not in self.members:
                return candidate
        raise AssertionError("unreachable: more candidates than members")

    def add(self, member: Member, wanted_nick: str, room: str = limits.DEFAULT_ROOM) -> None:
        """Register a new member under (a free variant of) its nickname, in ``room``."""
        if not protocol.valid_nick(wanted_nick):
            raise ValueError(f"not a valid nickname: {wanted_nick!r}")
        recent = self.recent_lines(room, self.history_on_join)  # may wait (a store's read): before the name is held
        member.nick = self.free_nick(wanted_nick, room)
        member.room = None
        self.members[protocol.fold(member.nick)] = member
        entered = self._enter(member, room)
        member.deliver(protocol.welcome(member.nick, room) + block(entered.name, recent))
        if self.presence:
            self.to_room(member.room, protocol.joined(member.nick, room), member)

    def remove(self, member: Member, reason: str = "", announce: bool = True) -> None:
        """Forget a member that has gone; the others in its room are told it quit."""
        key = protocol.fold(member.nick)
        if self.members.get(key) is not member:
            return  # never added, or removed already
        del self.members[key]
        room = member.room
        self._leave(member)
        if announce and self.presence:
            self.to_room(room, protocol.quit_line(member.nick, reason))

    def rename(self, member: Member, new: str) -> None:
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
            member.deliver(protocol.notice(f"You are already known as {new}"))
            return
        del self.members[old_key]
        self.members[new_key] = member
        member.nick = new
        member.deliver(protocol.notice(f"You are now known as {new}"))
        if self.presence:
            self.to_room(member.room, protocol.renamed(old, new), member)

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
        self.rename(member, nick)

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
        old = member.nick
        del self.members[protocol.fold(old)]
        self.members[protocol.fold(new)] = member
        member.nick = new
        member.deliver(protocol.notice(f"You are now known as {new}"))
        if self.presence:
            self.to_room(member.room, protocol.renamed(old, new), member)

    def join(self, member: Member, name: str) -> None:
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
        self._leave(member)
        if self.presence and old is not None:
            self.to_room(old, protocol.left(member.nick, old.name))
        room = self._enter(member, name)
        member.deliver(protocol.notice(f"You are now in {room.name}") + block(room.name, recent))
        if self.presence:
            self.to_room(room, protocol.joined(member.nick, room.name), member)

    def _enter(self, member: Member, name: str) -> Room:
        key = protocol.fold(name)
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = Room(name)
        room.members[member] = None
        member.room = room
        return room

    def _leave(self, member: Member) -> None:
        room = member.room
        if room is None:
            return
        room.members.pop(member, None)
        member.room = None
        if not room.members:
            del self.rooms[room.key]

    # --------------------------------------------------------------------- talking

    def chat(self, member: Member, text: str) -> None:
        self.chat_lines(member, (text,))

    def chat_lines(self, member: Member, texts: list[str] | tuple[str, ...]) -> None:
        """Chat lines from one member, in order, sent on as one piece per recipient."""
        nick = member.nick
        self.stats.messages_received += len(texts)
        if self.log_messages:
            for text in texts:
                log.info("%s: %s", nick, text)
        data = b"".join([protocol.chat_line(nick, text) for text in texts])
        self.to_room(member.room, data, member)
        if self.history is not None and member.room is not None:
            self.history.record(member.room.key, nick, texts)  # only queued: written later, elsewhere

    def action(self, member: Member, text: str) -> None:
        self.stats.messages_received += 1
        if self.log_messages:
            log.info("* %s %s", member.nick, text)
        self.to_room(member.room, protocol.action_line(member.nick, text), member)
        if self.history is not None and member.room is not None:
            self.history.record(member.room.key, member.nick, (text,), action=True)

    # --------------------------------------------------------------------- history

    def recent_lines(self, room_name: str, count: int) -> list[Entry]:
        """The last ``count`` kept lines of a room (oldest first); may wait on the store."""
        if self.history is None or count < 1:
            return []
        return self.history.recent(protocol.fold(room_name), count)

    def show_history(self, member: Member, count: int) -> None:
        """``/history [N]``: the room's last ``count`` lines as a block, or why there are none."""
        if self.history is None:
            raise HubError(HISTORY_OFF)
        room = member.room
        assert room is not None, "every registered member is in a room"
        recent = self.recent_lines(room.name, count)
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

    def private(self, member: Member, target_nick: str, text: str) -> None:
        target = self.members.get(protocol.fold(target_nick))
        if target is None:
            raise HubError(f"no such nickname: {protocol.strip_controls(target_nick)[:64]}")
        if target is not member:
            # A /msg sender never gets the *NICK* line (the contract), so one sent to
            # oneself is only confirmed, like any other.
            target.deliver(protocol.private_line(member.nick, text))
            self.stats.lines_relayed += 1
        member.deliver(protocol.notice(f"To {target.nick}: {text}"))

    def to_room(self, room: Room | None, data: bytes, exclude: Member | None = None) -> None:
        """A line for everyone in ``room`` but ``exclude``: chat, actions, presence.

        Here that is the room's local members; a hub linked to other server processes
        (``cluster.ClusterHub``) also sends the line to the room's members there.
        """
        self.deliver_local(room, data, exclude)

    def deliver_local(self, room: Room | None, data: bytes, exclude: Member | None = None) -> None:
        """Queue ``data`` (encoded lines) for every member of ``room`` here but ``exclude``.

        This is the single way lines reach local members of a room; a message bus linking
        several server processes calls it for lines that arrive from the others.
        """
        if room is None:
            return
        members = room.members
        # Counted once per call, as lines times recipients (never per delivery).
        self.stats.lines_relayed += data.count(b"\n") * (len(members) - (exclude in members))
        for recipient in members:
            if recipient is not exclude:
                recipient.deliver(data)

    def broadcast(self, data: bytes) -> None:
        """Queue ``data`` for every member in every room (server notices)."""
        for member in list(self.members.values()):
            member.deliver(data)

    def begin_stop(self) -> None:
        """The server is stopping: every member is being told so and sent away."""

    # ------------------------------------------------------------------- listings

    def room_counts(self) -> list[tuple[str, int]]:
        return sorted(((room.name, len(room.members)) for room in self.rooms.values()), key=lambda rc: protocol.fold(rc[0]))

    def nicks_in(self, room: Room) -> list[str]:
        return [member.nick for member in room.members]


def chunked(items: Iterable[str], size: int) -> list[list[str]]:
    items = list(items)
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]
