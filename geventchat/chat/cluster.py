"""Several server processes, one chat: the hub side of the Redis bus (``--workers`` is in
``server.workers``).

``ClusterHub`` is a ``Hub`` whose room lines (chat, actions, presence) also go to the
other processes through ``bus.RedisBus``, and which receives theirs: a line from another
process reaches local members through ``Hub.deliver_local``, like any other. Nicknames
are claimed cluster-wide before they are used; ``/who``, ``/rooms`` and ``/stats`` add the
members of the other processes (read from Redis when asked); ``/msg`` finds a nickname
wherever it is.

With the link down, everything local goes on as before (names are then only checked
here); the bus re-announces this process's members when the link is back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent

from geventchat.chat import events
from geventchat.chat.bus import LINK_DOWN, LINK_UP, PRIVATE, ROOM, BusError, RedisBus
from geventchat.chat.hub import Hub, HubError, Member, Room, rooms_of
from geventchat.core import limits, protocol
from geventchat.core.config import Settings
from geventchat.core.history import DEFAULT_REQUEST, HistoryStore

log = logging.getLogger("geventchat")

# Nickname variants tried for a new connection before giving up (port-N, N = 2, 3, ...).
MAX_NICK_TRIES = 1000

# The reason the others see for the users of a server that stops cleanly.
STOPPING_REASON = "server shutting down"

# A bus record asking the process whose member holds nickname KEY to give it up: someone
# logged in to that registered nickname elsewhere (the line is the name as logged in).
TAKEOVER = "T"
# Seconds a login waits for another process to let go of its nickname.
TAKEOVER_WAIT = 5.0


class ClusterHub(Hub):
    @property
    def commands_wait(self) -> bool:
        return True  # a name or a room is claimed through Redis

    def __init__(
        self,
        bus: RedisBus,
        *,
        presence: bool = True,
        log_messages: bool = True,
        history: HistoryStore | None = None,
        history_on_join: int = DEFAULT_REQUEST,
    ) -> None:
        # history: one store for the whole cluster (Redis): every process reads the lines
        # the others recorded
        super().__init__(presence=presence, log_messages=log_messages, history=history, history_on_join=history_on_join)
        self.bus = bus
        self.input_gate = bus.gate  # closed while the bus subscriber is behind
        self._claiming: set[str] = set()  # folded nicknames being claimed in Redis right now
        self._stopping = False  # our members have been told the server is shutting down

    def start(self) -> None:
        self.bus.start(self)

    def close(self) -> None:
        self.bus.close()
        super().close()

    def begin_stop(self) -> None:
        # "*** Server shutting down" is the last thing our members hear: the other processes'
        # lines (such as the quits of a --workers sibling stopping at the same time) are no
        # longer handed to them. What they leave is still published.
        super().begin_stop()
        self._stopping = True

    # ------------------------------------------------------------------- outgoing

    def to_room(self, room: Room | None, event: events.Event | bytes, exclude: Member | None = None) -> None:
        if room is None:
            return
        if isinstance(event, bytes):
            event = events.raw(event)
        self.deliver_local(room, event, exclude)
        self.bus.publish(ROOM, room.key, event.to_bus())

    def to_rooms(self, rooms: list[Room], event: events.Event, exclude: Member | None = None) -> None:
        if not rooms:
            return
        self.deliver_rooms_local(rooms, event, exclude)
        # One record for all the rooms: a member elsewhere in several of them is told once.
        self.bus.publish(ROOM, ",".join(room.key for room in rooms), event.to_bus())

    def free_nick(self, wanted: str, room: str | None = limits.DEFAULT_ROOM) -> str:
        for n in range(1, MAX_NICK_TRIES + 1):
            candidate = wanted if n == 1 else f"{wanted[: limits.MAX_NICK - 1 - len(str(n))]}-{n}"
            key = protocol.fold(candidate)
            if key in self.members or key in self._claiming:
                continue
            self._claiming.add(key)
            try:
                ok = self.bus.claim(key, candidate, self._room_name(room) if room is not None else "")
            finally:
                self._claiming.discard(key)
            if ok:
                # No greenlet switch from here until Hub.add registers the name.
                return candidate
        raise HubError(f"no free nickname like {wanted}")

    def _room_name(self, name: str) -> str:
        """How ``name`` is spelt here: as the room's first member spelt it."""
        room = self.rooms.get(protocol.fold(name))
        return room.name if room is not None else name

    def add(self, member: Member, wanted_nick: str, room: str | None = limits.DEFAULT_ROOM) -> None:
        super().add(member, wanted_nick, room)
        if not self.bus.up:  # the others were told when the link went; a newcomer is now
            member.deliver(protocol.notice(LINK_DOWN))

    def add_exact(self, member: Member, nick: str) -> None:
        key = protocol.fold(nick)
        if key in self.members or key in self._claiming:
            raise HubError(f"nickname {nick} is already taken")
        self._claiming.add(key)
        try:
            if not self.bus.claim(key, nick, ""):
                raise HubError(f"nickname {nick} is already taken")
        finally:
            self._claiming.discard(key)
        if key in self.members:  # taken here while Redis answered
            self.bus.update(release=[key])
            raise HubError(f"nickname {nick} is already taken")
        super().add_exact(member, nick)

    @staticmethod
    def rooms_field(member: Member) -> str:
        """The rooms of a member as Redis lists them: names joined by commas."""
        return ",".join(room.name for room in rooms_of(member))

    def enter(self, member: Member, name: str) -> Room | None:
        room = super().enter(member, name)
        if room is not None:
            self.bus.update(members={protocol.fold(member.nick): (member.nick, self.rooms_field(member))})
        return room

    def part(self, member: Member, room: Room, reason: str = "") -> None:
        super().part(member, room, reason)
        self.bus.update(members={protocol.fold(member.nick): (member.nick, self.rooms_field(member))})

    def remove(self, member: Member, reason: str = "", announce: bool = True) -> None:
        key = protocol.fold(member.nick)
        if self.members.get(key) is not member:
            return
        rooms = rooms_of(member)
        # First Redis (one round trip), then the others are told: whoever sees the quit
        # can take the name at once.
        self.bus.update(gone=[key], release=[key])
        if self.members.get(key) is not member:
            return
        super().remove(member, reason, announce)
        if not announce and rooms:
            # The server is stopping: its own users are told so; the others see them go.
            event = self._event(events.QUIT, member, texts=(reason or STOPPING_REASON,))
            self.bus.publish(ROOM, ",".join(room.key for room in rooms), event.to_bus())

    def rename(self, member: Member, new: str, confirm: bool = True) -> None:
        self.check_registered(member, new)
        old = member.nick
        new_key, old_key = protocol.fold(new), protocol.fold(old)
        if new_key in self._claiming:
            raise HubError(f"nickname {new} is already taken")
        if not protocol.valid_nick(new) or new_key == old_key or new_key in self.members:
            if protocol.valid_nick(new) and new_key == old_key and new != old:
                self.bus.update(respell={new_key: new}, members={new_key: (new, self.rooms_field(member))})
            super().rename(member, new, confirm)  # refusals, "already known as", a change of capitals
            return
        self._claiming.add(new_key)
        try:
            if not self.bus.claim(new_key, new, self.rooms_field(member)):
                raise HubError(f"nickname {new} is already taken")
            self.bus.update(gone=[old_key], release=[old_key])
            super().rename(member, new, confirm)
        finally:
            self._claiming.discard(new_key)

    def take_nick(self, member: Member, nick: str) -> None:
        if member.nick != nick:
            self._take_over_elsewhere(nick)
        super().take_nick(member, nick)

    def free_for_login(self, member: Member, nick: str) -> None:
        self._take_over_elsewhere(nick)
        super().free_for_login(member, nick)

    def _take_over_elsewhere(self, nick: str) -> None:
        key = protocol.fold(nick)
        if key not in self.members:
            found = self.bus.lookup(key)
            if found is not None and found[0] != self.bus.id:
                # Held on another process: ask it to let go, and wait (bounded) until it has.
                self.bus.publish(TAKEOVER, key, nick.encode())
                deadline = time.monotonic() + TAKEOVER_WAIT
                while found is not None and found[0] != self.bus.id and time.monotonic() < deadline:
                    gevent.sleep(0.05)
                    found = self.bus.lookup(key)

    def force_rename(self, member: Member, new: str) -> None:
        old_key = protocol.fold(member.nick)
        super().force_rename(member, new)  # ``new`` is claimed already (free_nick)
        self.bus.update(gone=[old_key], release=[old_key])

    def _taken_over(self, key: str, nick: str) -> None:
        holder = self.members.get(key)
        if holder is not None:
            self.evict(holder, nick)

    def join(self, member: Member, name: str) -> None:
        old = member.room
        if protocol.valid_room(name) and (old is None or old.key != protocol.fold(name)):
            self.bus.update(members={protocol.fold(member.nick): (member.nick, self._room_name(name))})
        super().join(member, name)

    def private(self, member: Member, target_nick: str, text: str, kind: str = events.PRIVATE, confirm: bool = True) -> None:
        key = protocol.fold(target_nick)
        if key not in self.members:
            found = self.bus.lookup(key)
            if found is not None and found[0] != self.bus.id:
                self.bus.publish(PRIVATE, key, self._event(kind, member, texts=(text,), target=found[1]).to_bus())
                if confirm:
                    member.deliver(protocol.notice(f"To {found[1]}: {text}"))
                return
        super().private(member, target_nick, text, kind, confirm)

    def find(self, nick: str) -> str | None:
        """The nickname as spelt wherever it is in the cluster, or None."""
        member = self.members.get(protocol.fold(nick))
        if member is not None:
            return member.nick
        found = self.bus.lookup(protocol.fold(nick))
        return found[1] if found is not None else None

    # ------------------------------------------------------------------- listings

    def room_counts(self) -> list[tuple[str, int]]:
        names = {room.key: room.name for room in self.rooms.values()}
        counts = {room.key: len(room.members) for room in self.rooms.values()}
        for _, room_names in self.bus.remote_members():
            for room_name in room_names.split(","):
                if room_name:
                    key = protocol.fold(room_name)
                    names.setdefault(key, room_name)
                    counts[key] = counts.get(key, 0) + 1
        return sorted(((names[key], count) for key, count in counts.items()), key=lambda rc: protocol.fold(rc[0]))

    def nicks_in(self, room: Room) -> list[str]:
        here = super().nicks_in(room)
        return here + [nick for nick, room_names in self.bus.remote_members() if room.key in protocol.fold(room_names).split(",")]

    # ------------------------------------------------------------ from the bus

    def bus_records(self, records: list[tuple[str, str, bytes]]) -> None:
        if self._stopping:
            return
        rooms, members, deliver_local = self.rooms, self.members, self.deliver_local
        from_bus = events.Event.from_bus
        for kind, key, data in records:
            if kind == ROOM:
                if "," in key:  # a quit or rename, told once across several rooms
                    found = [room for room in map(rooms.get, key.split(",")) if room is not None]
                    if found:
                        self.deliver_rooms_local(found, from_bus(data))
                    continue
                room = rooms.get(key)
                if room is not None:
                    deliver_local(room, from_bus(data))
            elif kind == PRIVATE:
                target = members.get(key)
                if target is not None:
                    self.deliver_event(target, from_bus(data))
            elif kind == TAKEOVER and key in members:
                gevent.spawn(self._taken_over, key, data.decode())  # it waits for Redis

    def bus_link(self, up: bool) -> None:
        if self.members and not self._stopping:
            self.broadcast(protocol.notice(LINK_UP if up else LINK_DOWN))

    def bus_snapshot(self) -> dict[str, tuple[str, str]]:
        return {key: (member.nick, self.rooms_field(member)) for key, member in self.members.items()}

    def bus_reaped(self, members: list[tuple[str, str]]) -> None:
        for nick, room_names in members:
            if not room_names:
                continue
            event = events.Event(events.QUIT, nick, "line")
            keys = [protocol.fold(name) for name in room_names.split(",")]
            if not self._stopping:  # the others are told even so: we alone got the list
                found = [room for room in map(self.rooms.get, keys) if room is not None]
                if found:
                    self.deliver_rooms_local(found, event)
            self.bus.publish(ROOM, ",".join(keys), event.to_bus())

    def bus_rejoined(self) -> None:
        """We had been taken for dead (a stall longer than the expiry) and shown as quit
        elsewhere: show our members as back."""
        for member in list(self.members.values()):
            for room in rooms_of(member):
                self.bus.publish(ROOM, room.key, self._event(events.JOIN, member, room.name).to_bus())

    def bus_clash(self, folded: list[str]) -> None:
        """Names taken on another process while the link was down: ours get a free variant."""
        for key in folded:
            member = self.members.get(key)
            if member is None:
                continue
            old = member.nick
            new = self.free_nick(old, self.rooms_field(member))  # claims it (old itself is skipped: ours)
            if self.members.get(key) is not member:
                continue  # left meanwhile (free_nick waited for Redis)
            event = self._event(events.NICK, member, target=new)
            del self.members[key]
            self.members[protocol.fold(new)] = member
            member.nick = new
            self.bus.update(gone=[key])
            member.deliver(
                protocol.notice(
                    f"Your nickname {old} was taken on another server while the link was down: you are now known as {new}"
                )
            )
            self.tell_renamed(member, event)
            self.to_rooms(rooms_of(member), event, member)


def connect(url: str, settings: Settings, *, expiry: float | None = None, link_now: bool = True, **history: Any) -> ClusterHub:
    """A hub linked to the cluster behind ``url``; raises ``bus.BusError`` if Redis cannot
    be used now (not installed, bad URL, unreachable). With ``link_now`` False (a
    ``--workers`` worker started again while its cluster runs), only a bad URL raises: the
    hub serves its users at once and the link comes up, with backoff, when Redis answers."""
    from geventchat.chat.bus import DEFAULT_EXPIRY

    link = RedisBus(url, expiry=expiry or DEFAULT_EXPIRY)
    if link_now:
        link.check()
    hub = ClusterHub(link, presence=settings.presence, log_messages=settings.log_messages, **history)
    hub.start()
    if link_now and not link.wait_up(timeout=10):
        link.close(timeout=0)
        raise BusError(f"cannot join the cluster at {url}: the Redis link did not come up")
    return hub
