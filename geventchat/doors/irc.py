"""The IRC front door (``--irc-port``): the same chat for IRC clients (irssi, WeeChat, HexChat).

An IRC client is an ``IrcSession`` (a ``Session``: the same outbox, writer, send queue
and closing as the line door, with the IRC user's state and commands) read by a
``Reader`` (the same parking, rate limit and stop) with this door's codec, ``IRC_CODEC``
(framing through the sans-IO ``core.irc``; acting through the session's commands). It joins the hub when the client has registered (NICK and USER, after any
``CAP`` negotiation), in no room; each ``JOIN #ROOM`` enters room ROOM as well, so an IRC
user may be in several rooms at once. What happens in a room reaches it as the hub's
events in the IRC encoding (``chat.events``), encoded once per relay for all IRC members;
the hub's own notices for it (``*** ...`` lines: shutdown, link down) become NOTICEs.

``IrcServer`` is the listener; it also pings clients that went silent and drops those
that do not answer (``Ping timeout``).
"""

from __future__ import annotations

import base64
import datetime
import itertools
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import gevent
from gevent.server import StreamServer

from geventchat import __version__
from geventchat.chat import events
from geventchat.chat.hub import HubError, Room
from geventchat.core import irc, limits, protocol
from geventchat.core.history import MAX_REQUEST, Entry, stamp
from geventchat.doors import guard
from geventchat.doors.codec import LINE_CODEC
from geventchat.doors.connection import tune_listener
from geventchat.doors.reader import Reader
from geventchat.doors.session import Session, describe_peer

log = logging.getLogger("geventchat")
lifecycle = logging.getLogger("geventchat.lifecycle")

SERVER = events.SERVER_NAME
# Seconds of silence after which a client is pinged; as long again without an answer and
# it is dropped ("Ping timeout"). IRC clients answer a PING at once and most send their
# own every minute or two.
PING_INTERVAL = 120.0

CAPABILITIES = ("server-time", "message-tags", "batch", "draft/chathistory")
# Most lines one CHATHISTORY request returns (ISUPPORT CHATHISTORY=).
CHATHISTORY_MAX = 100
ISUPPORT = (
    "CHANTYPES=#",
    f"NICKLEN={limits.MAX_NICK}",
    f"CHANNELLEN={limits.MAX_ROOM + 1}",
    "CASEMAPPING=ascii",
    "PREFIX=()",
    "CHANMODES=,,,nt",
    "NETWORK=geventchat",
    f"CHATHISTORY={CHATHISTORY_MAX}",
)
USER_MODES = "i"
CHANNEL_MODES = "nt"
_USER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _irc_user(given: str) -> str:
    """The user name shown in ``nick!user@host``: what USER gave (safe characters, at most
    10), with ``~`` before it (no ident check is made)."""
    name = "".join(ch for ch in given if ch in _USER_CHARS)[:10]
    return "~" + (name or "user")


@dataclass(frozen=True, slots=True)
class IrcCommand:
    """One IRC command's shared checks: parameters needed, registration needed."""

    name: str
    min_params: int
    registered: bool
    handler: str  # the IrcSession method that carries it out


COMMANDS = {
    spec.name: spec
    for spec in (
        IrcCommand("CAP", 1, False, "_cap"),
        IrcCommand("PASS", 1, False, "_pass"),
        IrcCommand("AUTHENTICATE", 1, False, "_authenticate"),
        IrcCommand("NICK", 0, False, "_nick"),
        IrcCommand("USER", 4, False, "_user"),
        IrcCommand("PING", 0, False, "_ping"),
        IrcCommand("PONG", 0, False, "_pong"),
        IrcCommand("QUIT", 0, False, "_quit"),
        IrcCommand("JOIN", 1, True, "_join"),
        IrcCommand("PART", 1, True, "_part"),
        IrcCommand("PRIVMSG", 0, True, "_privmsg"),
        IrcCommand("NOTICE", 0, True, "_notice"),
        IrcCommand("NAMES", 0, True, "_names"),
        IrcCommand("TOPIC", 1, True, "_topic"),
        IrcCommand("WHO", 0, True, "_who"),
        IrcCommand("WHOIS", 1, True, "_whois"),
        IrcCommand("LIST", 0, True, "_list"),
        IrcCommand("MODE", 1, True, "_mode"),
        IrcCommand("AWAY", 0, True, "_away"),
        IrcCommand("MOTD", 0, True, "_motd"),
        IrcCommand("USERHOST", 1, True, "_userhost"),
        IrcCommand("ISON", 1, True, "_ison"),
        IrcCommand("CHATHISTORY", 3, True, "_chathistory"),
    )
}


def room_name(channel: str) -> str | None:
    """The room of channel ``#R`` (R itself), or None if it is no channel of ours."""
    if channel[:1] != "#":
        return None
    name = channel[1:]
    return name if protocol.valid_room(name) else None


# The capabilities of a client that negotiated none (most): one shared empty set rather
# than a set per connection (216 bytes each, an idle IRC connection's largest field).
NO_CAPS: frozenset[str] = frozenset()


class _Signup:
    """What a client says before it has registered (NICK, USER, PASS, CAP negotiation);
    dropped once it has."""

    __slots__ = ("wanted_nick", "user_given", "negotiating", "password")

    def __init__(self) -> None:
        self.wanted_nick = ""
        self.user_given = False
        self.negotiating = False  # CAP LS/REQ seen, no CAP END yet: registration waits
        self.password = ""  # from PASS, for logging in to the account of the NICK (never logged)


class _Rooms:
    """``IrcSession.rooms`` as the hub reads and changes it: a mapping of folded room name
    to Room over the session's tuple of rooms, made on each use. An IRC user is in a room
    or a few: a tuple is a third of a dict's size, and a search through it as fast."""

    __slots__ = ("_session",)

    def __init__(self, session: IrcSession) -> None:
        self._session = session

    def get(self, key: str, default: Room | None = None) -> Room | None:
        room = self._session._room(key)
        return default if room is None else room

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._session._room(key) is not None

    def __setitem__(self, key: str, room: Room) -> None:
        session = self._session
        joined = session.joined
        for i, there in enumerate(joined):
            if there.key == key:
                session.joined = (*joined[:i], room, *joined[i + 1 :])
                return
        session.joined = (*joined, room)

    def pop(self, key: str, default: Room | None = None) -> Room | None:
        session = self._session
        joined = session.joined
        for i, room in enumerate(joined):
            if room.key == key:
                session.joined = joined[:i] + joined[i + 1 :]
                return room
        return default

    def values(self) -> tuple[Room, ...]:
        return self._session.joined

    def __iter__(self) -> Iterator[str]:
        return (room.key for room in self._session.joined)

    def __len__(self) -> int:
        return len(self._session.joined)


class IrcSession(Session):
    """An IRC client: the same Session, IRC commands, in any number of rooms."""

    __slots__ = (
        "joined",
        "encoding",
        "irc_user",
        "realname",
        "registered",
        "_signup",
        "caps",
        "away",
        "ping_sent",
        "_sasl",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.joined: tuple[Room, ...] = ()  # the rooms it is in, in the order it joined (the hub keeps them)
        self.encoding = "irc"  # "irc-time" once server-time is negotiated
        self.irc_user = "~user"
        self.realname = ""
        self.registered = False
        self._signup: _Signup | None = _Signup()  # None once registered
        self.caps: frozenset[str] = NO_CAPS  # replaced (never changed in place) by CAP REQ
        self.away = ""
        # When the server pinged a silent client (0: not waiting); input read since
        # (the reader's last_input, however little) answers it: see IrcServer._ping_loop.
        self.ping_sent = 0.0
        self._sasl: str | None = None  # base64 of an AUTHENTICATE PLAIN under way, else None

    # Encoded events (already IRC lines) go straight to the outbox; ``deliver`` is for the
    # hub's line-protocol notices, which it turns into IRC NOTICEs.
    deliver_encoded = Session.deliver

    @property
    def rooms(self) -> _Rooms:
        """The rooms it is in, by folded name (what the hub keeps for a multi-room member)."""
        return _Rooms(self)

    def _room(self, key: str) -> Room | None:
        """The room it is in of folded name ``key``, else None."""
        for room in self.joined:
            if room.key == key:
                return room
        return None

    def __repr__(self) -> str:
        return f"<IrcSession {self.peer} {self.nick!r}>"

    # ----------------------------------------------------------------- output

    def deliver(self, data: bytes) -> None:
        """The hub's notices (line protocol) as NOTICEs from the server."""
        nick = self.nick or "*"
        out = []
        for line in data.decode("utf-8", "replace").split("\n"):
            if line:
                text = line[4:] if line.startswith("*** ") else line
                out.append(f":{SERVER} NOTICE {nick} :{text}\r\n")
        if out:
            self.deliver_encoded("".join(out).encode())

    def send(self, *messages: irc.Message) -> None:
        self.deliver_encoded(b"".join(message.encode() for message in messages))

    def reply(self, numeric: str, *params: str) -> None:
        self.deliver_encoded(irc.Message(numeric, (self.nick or "*", *params), SERVER).encode())

    @property
    def source(self) -> str:
        return f"{self.nick}!{self.irc_user}@{events.HOST}"

    # ------------------------------------------------------------------ input

    def act_all(self, received: list) -> protocol.Quit | None:
        """Carry out one chunk's messages in order: chat through ``relay_chat``, the rest
        one by one. With --rate the reader hands them over one at a time."""
        done, count = 0, len(received)
        while done < count:
            done += self.relay_chat(received, done)
            if done == count:
                break
            outcome = self._act_one(received[done])
            done += 1
            if outcome is not None or self.closed:
                return outcome
        return None

    def relay_chat(self, received: list, start: int = 0) -> int:
        """Relay the chat (PRIVMSGs to channels it is in, CTCP aside) from ``received[start]``
        on, as long as it lasts, and say how many messages that was. Consecutive ones to one
        channel go to the hub together (one relay for the lot, as on the line door). Nothing
        here waits on a hub of this process alone: the reader may run it in the loop's
        callback (``IrcCodec.act_at_once``)."""
        if not self.registered:
            return 0
        hub = self.hub
        batch: list[str] = []
        batch_room: Room | None = None
        done, count = start, len(received)
        while done < count:
            message = received[done]
            if message.__class__ is not irc.Message or message.command != "PRIVMSG":
                break
            params = message.params
            if len(params) < 2 or params[0][:1] != "#":
                break
            text = params[1]
            if text[:1] == "\x01":
                break
            room = self._room(protocol.fold(params[0][1:]))
            if room is None:
                break
            text = protocol.strip_controls(text)
            if text:
                if room is not batch_room:
                    if batch:
                        hub.chat_lines(self, batch, batch_room)
                    batch, batch_room = [], room
                batch.append(text)
            done += 1
        if batch:
            hub.chat_lines(self, batch, batch_room)
        return done - start

    def _act_one(self, message: irc.Message | irc.InputTooLong | irc.ParseError) -> protocol.Quit | None:
        self.hub.catch_up(self)  # a reply comes after what happened in its channels before
        if message.__class__ is irc.InputTooLong:
            self._stats.lines_too_long += 1
            self.reply(irc.ERR_INPUTTOOLONG, "Input line was too long")
            return None
        if not isinstance(message, irc.Message):
            return None  # a line without a command: ignored, as servers do
        spec = COMMANDS.get(message.command)
        if spec is None:
            if self.registered:
                self.reply(irc.ERR_UNKNOWNCOMMAND, protocol.strip_controls(message.command)[:32], "Unknown command")
            else:
                self.reply(irc.ERR_NOTREGISTERED, "You have not registered")
            return None
        if spec.registered and not self.registered:
            self.reply(irc.ERR_NOTREGISTERED, "You have not registered")
            return None
        if len(message.params) < spec.min_params:
            self.reply(irc.ERR_NEEDMOREPARAMS, spec.name, "Not enough parameters")
            return None
        try:
            return getattr(self, spec.handler)(message.params)
        except HubError as refusal:
            self.deliver(protocol.notice(str(refusal)))
            return None

    # ------------------------------------------------------------ registration

    def _cap(self, params: tuple[str, ...]) -> None:
        sub = params[0].upper()
        nick = self.nick or "*"
        signup = self._signup
        if sub == "LS":
            if signup is not None:
                signup.negotiating = True
            offered = (
                [*CAPABILITIES, "sasl=PLAIN" if len(params) > 1 else "sasl"] if self.hub.accounts is not None else CAPABILITIES
            )
            self.send(irc.Message("CAP", (nick, "LS", " ".join(offered)), SERVER))
        elif sub == "LIST":
            self.send(irc.Message("CAP", (nick, "LIST", " ".join(sorted(self.caps))), SERVER))
        elif sub == "REQ":
            if signup is not None:
                signup.negotiating = True
            wanted = params[1].split() if len(params) > 1 else []
            known = (*CAPABILITIES, "sasl") if self.hub.accounts is not None else CAPABILITIES
            if wanted and all(cap.lstrip("-") in known for cap in wanted):
                caps = set(self.caps)
                for cap in wanted:
                    if cap.startswith("-"):
                        caps.discard(cap[1:])
                    else:
                        caps.add(cap)
                self.caps = frozenset(caps)
                encoding = "irc-time" if "server-time" in self.caps else "irc"
                if encoding != self.encoding:
                    if self.registered:
                        self.hub.set_encoding(self, encoding)
                    else:
                        self.encoding = encoding
                self.send(irc.Message("CAP", (nick, "ACK", " ".join(wanted)), SERVER))
            else:
                self.send(irc.Message("CAP", (nick, "NAK", " ".join(wanted)), SERVER))
        elif sub == "END":
            if signup is not None:
                signup.negotiating = False
                self._try_register()
        else:
            self.reply(irc.ERR_INVALIDCAPCMD, protocol.strip_controls(params[0])[:32], "Invalid CAP command")

    def _pass(self, params: tuple[str, ...]) -> None:
        """There is no server password: PASS is the password of the NICK's account, if it
        has one (else ignored). Never logged."""
        if self._signup is None:
            self.reply(irc.ERR_ALREADYREGISTERED, "You may not reregister")
            return
        self._signup.password = params[0][:256]

    def _authenticate(self, params: tuple[str, ...]) -> None:
        """SASL PLAIN (IRCv3 sasl 3.1): ``AUTHENTICATE PLAIN``, ``+``, then the base64 of
        ``authzid NUL authcid NUL password`` in 400-byte pieces."""
        accounts = self.hub.accounts
        arg = params[0]
        if accounts is None or "sasl" not in self.caps:
            self.reply(irc.ERR_SASLFAIL, "SASL authentication failed")
            return
        if self.account is not None:
            self.reply(irc.ERR_SASLALREADY, "You have already authenticated using SASL")
            return
        if arg == "*":
            if self._sasl is not None:
                self._sasl = None
                self.reply(irc.ERR_SASLABORTED, "SASL authentication aborted")
            return
        if self._sasl is None:
            if arg.upper() != "PLAIN":
                self.reply(irc.RPL_SASLMECHS, "PLAIN", "are available SASL mechanisms")
                self.reply(irc.ERR_SASLFAIL, "SASL authentication failed")
                return
            self._sasl = ""
            self.send(irc.Message("AUTHENTICATE", ("+",)))
            return
        if arg != "+":
            self._sasl += arg
        if len(self._sasl) > 1000:
            self._sasl = None
            self.reply(irc.ERR_SASLTOOLONG, "SASL message too long")
            return
        if len(arg) == 400:
            return  # more pieces follow
        data, self._sasl = self._sasl, None
        try:
            authzid, authcid, password = base64.b64decode(data, validate=True).decode().split("\0")
        except (ValueError, UnicodeDecodeError):
            self.reply(irc.ERR_SASLFAIL, "SASL authentication failed")
            return
        name = authcid or authzid
        try:
            key = accounts.verify(name, password, self.address[0])
        except HubError as refusal:
            self.reply(irc.ERR_SASLFAIL, f"SASL authentication failed: {refusal}")
            return
        self.account = key
        self.reply(irc.RPL_LOGGEDIN, self.source if self.nick else "*", name, f"You are now logged in as {name}")
        self.reply(irc.RPL_SASLSUCCESS, "SASL authentication successful")

    def _nick(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self.reply(irc.ERR_NONICKNAMEGIVEN, "No nickname given")
            return
        new = params[0]
        if not protocol.valid_nick(new):
            self.reply(irc.ERR_ERRONEUSNICKNAME, protocol.strip_controls(new)[:32], "Erroneous nickname")
            return
        if self._signup is not None:
            self._signup.wanted_nick = new
            self._try_register()
            return
        old_source = self.source
        try:
            self.hub.rename(self, new, confirm=False)
        except HubError as refusal:
            self.reply(irc.ERR_NICKNAMEINUSE, new, str(refusal))
            return
        if self.source != old_source:
            self.send(irc.Message("NICK", (new,), old_source))

    def _user(self, params: tuple[str, ...]) -> None:
        if self._signup is None:
            self.reply(irc.ERR_ALREADYREGISTERED, "You may not reregister")
            return
        self.irc_user = _irc_user(params[0])
        self.realname = protocol.strip_controls(params[3])[:64]
        self._signup.user_given = True
        self._try_register()

    def _try_register(self) -> None:
        signup = self._signup
        if signup is None or signup.negotiating or not signup.wanted_nick or not signup.user_given:
            return
        nick = signup.wanted_nick
        key = protocol.fold(nick)
        accounts = self.hub.accounts
        password, signup.password = signup.password, ""
        if accounts is not None and password and self.account is None:
            try:
                if accounts.is_registered(nick):
                    self.account = accounts.verify(nick, password, self.address[0])
            except HubError as refusal:
                self.reply(irc.ERR_PASSWDMISMATCH, f"Password incorrect: {refusal}")
        try:
            if self.account == key:
                self.hub.free_for_login(self, nick)  # logged in to it: the holder gives it up, wherever it is
            self.hub.check_registered(self, nick)
            self.hub.add_exact(self, nick)
        except HubError as refusal:
            self.reply(irc.ERR_NICKNAMEINUSE, nick, str(refusal))
            return
        self.registered = True
        self._signup = None
        self._welcome()
        if self.account is not None:
            self.reply(irc.RPL_LOGGEDIN, self.source, self.nick, f"You are now logged in as {self.nick}")

    def _welcome(self) -> None:
        nick = self.nick
        self.reply(irc.RPL_WELCOME, f"Welcome to the geventchat IRC door, {self.source}")
        self.reply(irc.RPL_YOURHOST, f"Your host is {SERVER}, running version geventchat-{__version__}")
        self.reply(irc.RPL_CREATED, "This server speaks IRC to the same chat as its line and web doors")
        self.reply(irc.RPL_MYINFO, SERVER, f"geventchat-{__version__}", USER_MODES, CHANNEL_MODES)
        self.reply(irc.RPL_ISUPPORT, *ISUPPORT, "are supported by this server")
        self._motd(())
        log.info("IRC client %s registered as %s", self.peer, nick)

    def _motd(self, params: tuple[str, ...]) -> None:
        self.reply(irc.ERR_NOMOTD, "MOTD File is missing")

    def _ping(self, params: tuple[str, ...]) -> None:
        if not params:
            self.reply(irc.ERR_NOORIGIN, "No origin specified")
            return
        self.send(irc.Message("PONG", (SERVER, params[-1]), SERVER))

    def _pong(self, params: tuple[str, ...]) -> None:
        """Any input answers the server's PING (see ``act_all``)."""

    def _quit(self, params: tuple[str, ...]) -> protocol.Quit:
        reason = protocol.strip_controls(params[0])[:200] if params else ""
        shown = f"Quit: {reason}" if reason else "Client Quit"
        self.send(irc.Message("ERROR", (f"Closing Link: {events.HOST} ({shown})",)))
        return protocol.Quit(reason)

    # ---------------------------------------------------------------- channels

    def _join(self, params: tuple[str, ...]) -> None:
        if params[0] == "0":
            for room in self.joined:
                self.hub.part(self, room)
            return
        for channel in params[0].split(","):
            name = room_name(channel)
            if name is None:
                self.reply(irc.ERR_NOSUCHCHANNEL, protocol.strip_controls(channel)[:64], "No such channel")
                continue
            if self._room(protocol.fold(name)) is not None:
                continue
            recent = self.hub.recent_lines(name, self.hub.history_on_join)  # may wait: read before entering
            if self.hub.members.get(protocol.fold(self.nick)) is not self:
                return  # gone while the store was read
            entered = self.hub.enter(self, name)
            if entered is not None:
                self._send_names(entered)
                if recent:
                    self.replay(entered, recent)

    def replay(self, room: Room, entries: list[Entry]) -> None:
        """A room's recent lines (oldest first): PRIVMSGs from their senders tagged with the
        time they were relayed when ``server-time`` is on, else NOTICEs from the server
        that begin with that time (``[YYYY-MM-DD HH:MM:SS] NICK: text``, UTC)."""
        channel = events.channel(room.name)
        if "server-time" in self.caps:
            out = [
                events.Event(
                    events.ACTION if e.action else events.CHAT, e.nick, "line", room.name, (e.text,), when=e.time
                ).encoded("irc-time")
                for e in entries
            ]
            self.deliver_encoded(b"".join(out))
            return
        head = f":{SERVER} NOTICE {channel} :"
        lines = []
        for e in entries:
            text = f"[{stamp(e.time)}] * {e.nick} {e.text}" if e.action else f"[{stamp(e.time)}] {e.nick}: {e.text}"
            for piece in irc.split_text(text, irc.MAX_LINE - 2 - len(head.encode())):
                lines.append(f"{head}{piece}\r\n")
        self.deliver_encoded("".join(lines).encode())

    def _chathistory(self, params: tuple[str, ...]) -> None:
        """``CHATHISTORY LATEST #chan * N`` and ``CHATHISTORY BEFORE #chan timestamp=T N``
        (IRCv3 draft/chathistory): the room's kept lines, time-tagged, in a batch when
        ``batch`` is negotiated."""
        sub, target = params[0].upper(), params[1]
        if sub not in ("LATEST", "BEFORE") or len(params) < 4 or not params[3].isdigit():
            self.send(
                irc.Message("FAIL", ("CHATHISTORY", "INVALID_PARAMS", sub, "Only LATEST * N and BEFORE timestamp=T N"), SERVER)
            )
            return
        name = room_name(target)
        if name is None:
            self.send(
                irc.Message("FAIL", ("CHATHISTORY", "INVALID_TARGET", sub, target[:64], "Only channels keep history"), SERVER)
            )
            return
        count = min(int(params[3]), CHATHISTORY_MAX)
        before = None
        if sub == "BEFORE" or params[2] != "*":
            before = _timestamp(params[2])
            if before is None:
                self.send(irc.Message("FAIL", ("CHATHISTORY", "INVALID_PARAMS", sub, "Bad timestamp"), SERVER))
                return
        if self.hub.history is None:
            self.send(irc.Message("FAIL", ("CHATHISTORY", "MESSAGE_ERROR", sub, target[:64], "History is turned off"), SERVER))
            return
        entries = self.hub.recent_lines(name, MAX_REQUEST if before is not None else count)
        if before is not None:
            entries = [e for e in entries if e.time < before][-count:]
        channel = events.channel(name)
        batch = "batch" in self.caps
        out = []
        tag = ""
        if batch:
            tag = f"h{next(_BATCH_IDS)}"
            out.append(f":{SERVER} BATCH +{tag} chathistory {channel}\r\n".encode())
        for e in entries:
            event = events.Event(events.ACTION if e.action else events.CHAT, e.nick, "line", name, (e.text,), when=e.time)
            lines = event.encoded("irc-time")
            if batch:
                lines = lines.replace(b"@time=", f"@batch={tag};time=".encode())
            out.append(lines)
        if batch:
            out.append(f":{SERVER} BATCH -{tag}\r\n".encode())
        self.deliver_encoded(b"".join(out))

    def _part(self, params: tuple[str, ...]) -> None:
        reason = protocol.strip_controls(params[1])[:200] if len(params) > 1 else ""
        for channel in params[0].split(","):
            room = self._my_room(channel)
            if room is not None:
                self.hub.part(self, room, reason)

    def _my_room(self, channel: str) -> Room | None:
        """The room of a channel this user is in; else the error numeric, and None."""
        name = room_name(channel)
        shown = protocol.strip_controls(channel)[:64]
        if name is None:
            self.reply(irc.ERR_NOSUCHCHANNEL, shown, "No such channel")
            return None
        room = self._room(protocol.fold(name))
        if room is None:
            if protocol.fold(name) in self.hub.rooms or self._remote_room(name):
                self.reply(irc.ERR_NOTONCHANNEL, shown, "You're not on that channel")
            else:
                self.reply(irc.ERR_NOSUCHCHANNEL, shown, "No such channel")
        return room

    def _remote_room(self, name: str) -> bool:
        key = protocol.fold(name)
        return any(protocol.fold(room) == key for room, _ in self.hub.room_counts())

    def _send_names(self, room: Room) -> None:
        channel = events.channel(room.name)
        nicks = self.hub.nicks_in(room)
        head = f":{SERVER} {irc.RPL_NAMREPLY} {self.nick} = {channel} :"
        budget = irc.MAX_LINE - 2 - len(head.encode())
        line: list[str] = []
        size = 0
        out = []
        for nick in nicks:
            if line and size + len(nick) + 1 > budget:
                out.append(head + " ".join(line) + "\r\n")
                line, size = [], 0
            line.append(nick)
            size += len(nick) + 1
        if line:
            out.append(head + " ".join(line) + "\r\n")
        self.deliver_encoded("".join(out).encode())
        self.reply(irc.RPL_ENDOFNAMES, channel, "End of /NAMES list")

    def _names(self, params: tuple[str, ...]) -> None:
        if not params:
            for room in self.joined:
                self._send_names(room)
            return
        for channel in params[0].split(","):
            name = room_name(channel)
            found = self.hub.rooms.get(protocol.fold(name)) if name is not None else None
            if found is not None:
                self._send_names(found)
            else:
                self.reply(irc.RPL_ENDOFNAMES, protocol.strip_controls(channel)[:64], "End of /NAMES list")

    def _topic(self, params: tuple[str, ...]) -> None:
        room = self._my_room(params[0])
        if room is None:
            return
        if len(params) > 1:
            self.reply(irc.ERR_CHANOPRIVSNEEDED, events.channel(room.name), "Topics cannot be set here")
            return
        self.reply(irc.RPL_NOTOPIC, events.channel(room.name), "No topic is set")

    def _list(self, params: tuple[str, ...]) -> None:
        self.reply(irc.RPL_LISTSTART, "Channel", "Users  Name")
        for name, count in self.hub.room_counts():
            self.reply(irc.RPL_LIST, events.channel(name), str(count), "")
        self.reply(irc.RPL_LISTEND, "End of /LIST")

    def _mode(self, params: tuple[str, ...]) -> None:
        target = params[0]
        if target[:1] == "#":
            name = room_name(target)
            shown = protocol.strip_controls(target)[:64]
            if name is None or (protocol.fold(name) not in self.hub.rooms and not self._remote_room(name)):
                self.reply(irc.ERR_NOSUCHCHANNEL, shown, "No such channel")
            elif len(params) == 1:
                self.reply(irc.RPL_CHANNELMODEIS, shown, "+" + CHANNEL_MODES)
            elif params[1].lstrip("+") in ("b", "e", "I"):
                self.reply(irc.RPL_ENDOFBANLIST, shown, "End of channel ban list")
            else:
                self.reply(irc.ERR_CHANOPRIVSNEEDED, shown, "Channel modes cannot be changed here")
            return
        if protocol.fold(target) != protocol.fold(self.nick):
            self.reply(irc.ERR_USERSDONTMATCH, "Cannot change mode for other users")
        elif len(params) == 1:
            self.reply(irc.RPL_UMODEIS, "+")
        # A user mode change (irssi sends MODE nick +i) is accepted quietly: no modes here.

    # ---------------------------------------------------------------- messages

    def _privmsg(self, params: tuple[str, ...]) -> None:
        self._message(params, notice=False)

    def _notice(self, params: tuple[str, ...]) -> None:
        self._message(params, notice=True)

    def _message(self, params: tuple[str, ...], notice: bool) -> None:
        command = "NOTICE" if notice else "PRIVMSG"
        if not params:
            if not notice:
                self.reply(irc.ERR_NORECIPIENT, f"No recipient given ({command})")
            return
        if len(params) < 2 or not params[1]:
            if not notice:
                self.reply(irc.ERR_NOTEXTTOSEND, "No text to send")
            return
        raw = params[1]
        action = irc.ctcp_action(raw)
        if action is None and irc.is_ctcp(raw):
            return  # other CTCP requests (VERSION, PING...) are not relayed
        text = protocol.strip_controls(action if action is not None else raw)
        if not text:
            return
        hub = self.hub
        for target in params[0].split(","):
            if target[:1] == "#":
                room = self._room(protocol.fold(target[1:]))
                if room is None:
                    if not notice:
                        name = room_name(target)
                        exists = name is not None and (protocol.fold(name) in hub.rooms or self._remote_room(name))
                        shown = protocol.strip_controls(target)[:64]
                        if exists:
                            self.reply(irc.ERR_CANNOTSENDTOCHAN, shown, "Cannot send to channel (no external messages)")
                        else:
                            self.reply(irc.ERR_NOSUCHCHANNEL, shown, "No such channel")
                    continue
                if action is not None:
                    hub.action(self, text, room)
                elif notice:
                    hub.channel_notice(self, text, room)
                else:
                    hub.chat_lines(self, (text,), room)
                continue
            kind = events.PRIVATE_ACTION if action is not None else events.PRIVATE_NOTICE if notice else events.PRIVATE
            try:
                hub.private(self, target, text, kind, confirm=False)
            except HubError:
                if not notice:
                    self.reply(irc.ERR_NOSUCHNICK, protocol.strip_controls(target)[:64], "No such nick/channel")
                continue
            other = hub.members.get(protocol.fold(target))
            away = getattr(other, "away", "")
            if away and not notice:
                self.reply(irc.RPL_AWAY, other.nick, away)  # type: ignore[union-attr]

    def _away(self, params: tuple[str, ...]) -> None:
        text = protocol.strip_controls(params[0])[:200] if params else ""
        self.away = text
        if text:
            self.reply(irc.RPL_NOWAWAY, "You have been marked as being away")
        else:
            self.reply(irc.RPL_UNAWAY, "You are no longer marked as being away")

    # ------------------------------------------------------------------ people

    def _user_of(self, member: object) -> str:
        return getattr(member, "irc_user", "line")

    def _who(self, params: tuple[str, ...]) -> None:
        mask = params[0] if params else "*"
        rows: list[tuple[str, str, str, str]] = []  # (channel, nick, user, realname)
        if mask[:1] == "#":
            name = room_name(mask)
            found = self.hub.rooms.get(protocol.fold(name)) if name is not None else None
            if found is not None:
                local = {protocol.fold(m.nick): m for m in found.members}
                for nick in self.hub.nicks_in(found):
                    member = local.get(protocol.fold(nick))
                    rows.append(
                        (events.channel(found.name), nick, self._user_of(member), getattr(member, "realname", "") or nick)
                    )
        else:
            member = self.hub.members.get(protocol.fold(mask))
            if member is not None:
                rooms = [r.name for r in getattr(member, "rooms", {}).values()] or (
                    [member.room.name] if member.room is not None else []
                )
                chan = events.channel(rooms[0]) if rooms else "*"
                rows.append((chan, member.nick, self._user_of(member), getattr(member, "realname", "") or member.nick))
        for chan, nick, user, real in rows:
            member = self.hub.members.get(protocol.fold(nick))
            flag = "G" if getattr(member, "away", "") else "H"
            self.reply(irc.RPL_WHOREPLY, chan, user, events.HOST, SERVER, nick, flag, f"0 {real}")
        self.reply(irc.RPL_ENDOFWHO, protocol.strip_controls(mask)[:64], "End of /WHO list")

    def _lookup(self, nick: str) -> str | None:
        member = self.hub.members.get(protocol.fold(nick))
        if member is not None:
            return member.nick
        find = getattr(self.hub, "find", None)
        return find(nick) if find is not None else None

    def _whois(self, params: tuple[str, ...]) -> None:
        wanted = params[-1].split(",")[0]
        shown = protocol.strip_controls(wanted)[:64]
        nick = self._lookup(wanted)
        if nick is None:
            self.reply(irc.ERR_NOSUCHNICK, shown, "No such nick/channel")
            self.reply(irc.RPL_ENDOFWHOIS, shown, "End of /WHOIS list")
            return
        member = self.hub.members.get(protocol.fold(nick))
        real = getattr(member, "realname", "") or nick
        self.reply(irc.RPL_WHOISUSER, nick, self._user_of(member), events.HOST, "*", real)
        if member is not None:
            rooms = [r.name for r in getattr(member, "rooms", {}).values()] or (
                [member.room.name] if member.room is not None else []
            )
            if rooms:
                self.reply(irc.RPL_WHOISCHANNELS, nick, " ".join(events.channel(r) for r in rooms))
        self.reply(irc.RPL_WHOISSERVER, nick, SERVER, "geventchat")
        away = getattr(member, "away", "")
        if away:
            self.reply(irc.RPL_AWAY, nick, away)
        self.reply(irc.RPL_ENDOFWHOIS, nick, "End of /WHOIS list")

    def _userhost(self, params: tuple[str, ...]) -> None:
        found = []
        for wanted in params[:5]:
            member = self.hub.members.get(protocol.fold(wanted))
            if member is not None:
                found.append(f"{member.nick}={'-' if getattr(member, 'away', '') else '+'}{self._user_of(member)}@{events.HOST}")
        self.reply("302", " ".join(found))

    def _ison(self, params: tuple[str, ...]) -> None:
        wanted = " ".join(params).split()
        self.reply("303", " ".join(nick for nick in (self._lookup(w) for w in wanted) if nick))

    # ---------------------------------------------------------------- leaving

    def ping_timeout(self) -> None:
        """No answer to the server's PING: say so, then drop (the others see the reason)."""
        self.drop_reason = "Ping timeout"
        self.send(irc.Message("ERROR", (f"Closing Link: {events.HOST} (Ping timeout)",)))
        # Loop callbacks run in order: the flush just scheduled goes first.
        self._run_callback(self.drop, "Ping timeout")


_BATCH_IDS = itertools.count(1)  # batch references: unique within the process is enough


def _timestamp(selector: str) -> float | None:
    """``timestamp=YYYY-MM-DDThh:mm:ss.sssZ`` as UTC seconds, else None."""
    if not selector.startswith("timestamp="):
        return None
    text = selector[len("timestamp=") :].rstrip("Z")
    try:
        moment = datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    return moment.timestamp()


class IrcCodec:
    """The IRC door's codec: ``core.irc`` framing, the session's IRC commands; what the
    hub sends an IRC member is already IRC (``IrcSession.deliver``), sent as it is."""

    __slots__ = ()

    door = "irc"
    reframes = False
    encode = staticmethod(LINE_CODEC.encode)

    def start(self, session: Session) -> None:
        """Nothing yet: an IRC client joins the hub once it has registered."""

    def new_framer(self, session: Session) -> _Framer:
        return _Framer()

    def act(self, session: Session, events: list) -> protocol.Quit | None:
        return session.act_all(events)  # type: ignore[attr-defined]  # an IrcSession

    def act_at_once(self, session: Session, events: list) -> int:
        """The chunk's leading chat, relayed in the loop's callback (``Reader``'s
        ``acts_in_loop``); how many messages that was, the reader hands the rest to ``act``."""
        return session.relay_chat(events)  # type: ignore[attr-defined]

    def farewell(self, session: Session, stopping: bool) -> bytes:
        return b""


IRC_CODEC = IrcCodec()


class _Framer(irc.IrcConnection):
    """``core.irc.IrcConnection`` as the reader wants a framer: ``receive_data`` returns the
    events the data completed (``frame``); ``in_line`` for the line timeout. A subclass
    rather than a wrapper: one object less per connection."""

    __slots__ = ()

    receive_data = irc.IrcConnection.frame  # type: ignore[assignment]


# ---------------------------------------------------------------------------- listener


# A refusal (guard's reasons) as the IRC client reads it in its ERROR line.
IRC_REFUSALS = {
    guard.SERVER_FULL_REASON: "server full",
    guard.PER_ADDRESS_REASON: "too many connections from your address",
}


class IrcServer:
    """The ``--irc-port`` listener, serving for a ``ChatServer`` (its hub, settings, limits,
    connection set and handler group: a stop ends IRC clients as it ends the others)."""

    def __init__(self, chat, listener, ping_interval: float = PING_INTERVAL) -> None:
        self.chat = chat
        self.ping_interval = ping_interval
        self._listener = StreamServer(listener, self._handle, spawn=chat.spawn_handler)
        self._pinger: gevent.Greenlet | None = None
        self._accepted_tuned = False  # see tune_listener, once the listener is started
        self.connections: set[Reader] = set()  # of IrcSessions
        # What every Reader is given, bound once here: a bound method made per connection
        # would be 64 bytes of each one.
        self._reader_spawn = chat.spawn_handler
        self._reader_closed = self._forget

    @property
    def address(self) -> tuple[str, int]:
        address = self._listener.address
        assert isinstance(address, tuple), "a TCP listener"
        return address[0], address[1]

    def start(self) -> None:
        self._listener.start()
        self._accepted_tuned = tune_listener(self._listener.socket)
        if self.ping_interval > 0:
            self._pinger = gevent.spawn(self._ping_loop)
        lifecycle.info("IRC listening on %s", describe_peer(self.address))

    def close(self) -> None:
        self._listener.close()
        if self._pinger is not None:
            self._pinger.kill(block=False)

    def _ping_loop(self) -> None:
        interval = self.ping_interval
        while True:
            gevent.sleep(min(max(interval / 4, 0.2), 15.0))
            now = time.monotonic()
            for connection in list(self.connections):
                session: IrcSession = connection.session  # type: ignore[assignment]
                if session.ping_sent and connection.last_input < session.ping_sent:  # any input answers
                    if now - session.ping_sent > interval:
                        session.ping_sent = 0.0
                        session.ping_timeout()
                elif now - connection.last_input > interval:
                    session.ping_sent = now
                    session.send(irc.Message("PING", (SERVER,)))

    def _refuse(self, sock: socket.socket, address: tuple, reason: str) -> None:
        chat = self.chat
        chat.stats.connections_refused += 1
        log.info("Refused connection from %s (%s)", describe_peer(address), reason)
        if chat.tls_context is not None:
            sock = chat._handshake(sock, address)
            if sock is None:
                return
        with gevent.Timeout(1.0, False):  # type: ignore[arg-type]  # False: end quietly (gevent's stubs miss it)
            try:
                sock.sendall(irc.Message("ERROR", (f"Closing Link: {events.HOST} ({reason})",)).encode())
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        sock.close()

    def _handle(self, sock: socket.socket, address: tuple) -> None:
        chat = self.chat
        if chat.stopping:
            sock.close()
            return
        refusal = chat.admission(address)
        if refusal is not None:
            self._refuse(sock, address, IRC_REFUSALS[refusal])
            return
        admitted = chat.admit(sock, address, tuned=self._accepted_tuned)  # tuned, TLS, counted: as on the chat port
        if admitted is None:
            return
        sock = admitted
        session = IrcSession(sock, address, chat.hub, chat.settings, IRC_CODEC)
        connection = Reader(session, spawn=self._reader_spawn, on_closed=self._reader_closed, acts_in_loop=chat.acts_in_loop)
        chat.connections.add(connection)
        self.connections.add(connection)
        try:
            connection.serve()
        except Exception:  # a bug: log it with its traceback, keep serving everyone else
            log.exception("Internal error while serving %s", connection.peer)
            sock.close()
            self._forget(connection)

    def _forget(self, connection: Reader) -> None:
        self.connections.discard(connection)
        self.chat._forget(connection)
