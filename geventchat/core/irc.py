"""The IRC client protocol (RFC 1459/2812 with IRCv3 message tags), sans-IO.

No sockets here, in the spirit of h11 (and of ``protocol.py`` and ``webproto.py``):

* ``parse(line)`` and ``Message.encode()`` turn one line into a ``Message`` (tags, source,
  command, params) and back; the community's parser vectors (the ``irc-parser-tests``
  package) check both directions;
* ``IrcConnection`` frames a byte stream: ``receive_data(bytes)``, then ``next_event()``
  (or ``events()``) gives a ``Message``, ``InputTooLong`` or ``NEED_DATA``;
  ``send(message) -> bytes`` encodes for the wire (``\\r\\n``; ``\\r\\n`` or ``\\n`` in);
* ``split_text`` cuts a long chat line into pieces whose PRIVMSG lines fit 512 bytes,
  nothing lost and never inside a UTF-8 sequence;
* CTCP ACTION (``/me``) and the numerics as named constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# An IRC line is at most 512 bytes with its "\r\n", message tags aside (RFC 1459 2.3);
# the tags may add 8191 bytes more, the "@" and the space after them included (IRCv3).
MAX_LINE = 512
MAX_TAGS = 8191
CRLF = b"\r\n"

# ------------------------------------------------------------------------- numerics
RPL_WELCOME = "001"
RPL_YOURHOST = "002"
RPL_CREATED = "003"
RPL_MYINFO = "004"
RPL_ISUPPORT = "005"
RPL_UMODEIS = "221"
RPL_AWAY = "301"
RPL_UNAWAY = "305"
RPL_NOWAWAY = "306"
RPL_WHOISUSER = "311"
RPL_WHOISSERVER = "312"
RPL_ENDOFWHO = "315"
RPL_WHOISIDLE = "317"
RPL_ENDOFWHOIS = "318"
RPL_WHOISCHANNELS = "319"
RPL_LISTSTART = "321"
RPL_LIST = "322"
RPL_LISTEND = "323"
RPL_CHANNELMODEIS = "324"
RPL_CREATIONTIME = "329"
RPL_NOTOPIC = "331"
RPL_WHOREPLY = "352"
RPL_NAMREPLY = "353"
RPL_ENDOFNAMES = "366"
RPL_ENDOFBANLIST = "368"
RPL_MOTD = "372"
RPL_MOTDSTART = "375"
RPL_ENDOFMOTD = "376"
ERR_NOSUCHNICK = "401"
ERR_NOSUCHSERVER = "402"
ERR_NOSUCHCHANNEL = "403"
ERR_CANNOTSENDTOCHAN = "404"
ERR_TOOMANYCHANNELS = "405"
ERR_NOORIGIN = "409"
ERR_INVALIDCAPCMD = "410"
ERR_NORECIPIENT = "411"
ERR_NOTEXTTOSEND = "412"
ERR_INPUTTOOLONG = "417"
ERR_UNKNOWNCOMMAND = "421"
ERR_NOMOTD = "422"
ERR_NONICKNAMEGIVEN = "431"
ERR_ERRONEUSNICKNAME = "432"
ERR_NICKNAMEINUSE = "433"
ERR_USERNOTINCHANNEL = "441"
ERR_NOTONCHANNEL = "442"
ERR_NOTREGISTERED = "451"
ERR_NEEDMOREPARAMS = "461"
ERR_ALREADYREGISTERED = "462"
ERR_PASSWDMISMATCH = "464"
ERR_UNKNOWNMODE = "472"
ERR_CHANOPRIVSNEEDED = "482"
ERR_UMODEUNKNOWNFLAG = "501"
ERR_USERSDONTMATCH = "502"
RPL_LOGGEDIN = "900"
RPL_SASLSUCCESS = "903"
ERR_SASLFAIL = "904"
ERR_SASLTOOLONG = "905"
ERR_SASLABORTED = "906"
ERR_SASLALREADY = "907"
RPL_SASLMECHS = "908"


# ------------------------------------------------------------------------- messages


class ParseError(ValueError):
    """A line that is no IRC message (empty, or tags/source with no command)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One IRC message. ``tags`` maps names to unescaped values ("" for a tag with none)."""

    command: str
    params: tuple[str, ...] = ()
    source: str | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=True, hash=False)

    def __str__(self) -> str:
        """The line without its line ending."""
        parts = []
        if self.tags:
            parts.append("@" + ";".join(k if v == "" else f"{k}={escape_tag(v)}" for k, v in self.tags.items()))
        if self.source:
            parts.append(":" + self.source)
        parts.append(self.command)
        params = self.params
        if params:
            parts.extend(params[:-1])
            last = params[-1]
            parts.append(":" + last if (not last or " " in last or last[0] == ":") else last)
        return " ".join(parts)

    def encode(self) -> bytes:
        return str(self).encode() + CRLF


_TAG_UNESCAPE = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_TAG_ESCAPE = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})


def escape_tag(value: str) -> str:
    return value.translate(_TAG_ESCAPE)


def unescape_tag(value: str) -> str:
    if "\\" not in value:
        return value
    out = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch == "\\":
            i += 1
            if i < n:
                nxt = value[i]
                out.append(_TAG_UNESCAPE.get(nxt, nxt))
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def parse_tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in text.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        tags[key] = unescape_tag(value)
    return tags


# parse() builds its Messages without the frozen dataclass's __init__ (four
# object.__setattr__ calls through the frozen check): the slots' own setters, half the cost.
_new_object = object.__new__
_set_command, _set_params, _set_source, _set_tags = (
    vars(Message)[slot].__set__ for slot in ("command", "params", "source", "tags")
)


def _message(command: str, params: tuple[str, ...], source: str | None, tags: dict[str, str]) -> Message:
    message = _new_object(Message)
    _set_command(message, command)
    _set_params(message, params)
    _set_source(message, source)
    _set_tags(message, tags)
    return message


def parse(line: str) -> Message:
    """One line (without its line ending) as a Message; spaces between atoms may repeat."""
    first = line[:1]
    if first and first not in "@: ":
        # What clients send nearly always (PRIVMSG #room :text, PING x): no tags, no
        # source, single spaces; taken apart with one split. Anything else: the long way.
        idx = line.find(" :")
        head = line if idx < 0 else line[:idx]
        if "  " not in head and head[-1] != " ":
            atoms = head.split(" ")
            if idx >= 0:
                atoms.append(line[idx + 2 :])
            return _message(atoms[0].upper(), tuple(atoms[1:]), None, {})
    tags: dict[str, str] = {}
    source = None
    rest = line.lstrip(" ")
    if rest[:1] == "@":
        head, _, rest = rest.partition(" ")
        tags = parse_tags(head[1:])
        rest = rest.lstrip(" ")
    if rest[:1] == ":":
        head, _, rest = rest.partition(" ")
        source = head[1:]
        rest = rest.lstrip(" ")
    trailing = None
    idx = rest.find(" :")
    if idx >= 0:
        rest, trailing = rest[:idx], rest[idx + 2 :]
    elif rest[:1] == ":":
        # Impossible after the strips above unless the command is missing.
        raise ParseError("no command")
    atoms = [atom for atom in rest.split(" ") if atom]  # only spaces separate (a TAB is text)
    if not atoms:
        raise ParseError("no command")
    if trailing is not None:
        atoms.append(trailing)
    return _message(atoms[0].upper(), tuple(atoms[1:]), source, tags)


def split_source(source: str) -> tuple[str, str, str]:
    """``nick!user@host`` as (nick, user, host), each "" where absent."""
    rest, _, host = source.partition("@")
    nick, _, user = rest.partition("!")
    return nick, user, host


# --------------------------------------------------------------------------- framing


@dataclass(frozen=True, slots=True)
class InputTooLong:
    """A line longer than the IRC limit arrived; it was discarded whole."""

    size: int


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class IrcConnection:
    """Frame and parse a client's byte stream, encode messages for it (h11-style).

    Input lines end in ``\\n`` (a ``\\r`` before it is dropped). A line whose message,
    tags aside, passes ``max_line`` bytes with its line ending, or whose tags pass
    ``max_tags``, is discarded whole and reported as ``InputTooLong``; the partial input
    held never passes ``max_line + max_tags`` bytes. Blank lines are skipped; a line with
    no command is reported as ``ParseError`` instance (as an event, the peer's mistake).
    Text is UTF-8 (bad bytes replaced); controls are kept (CTCP needs ``\\x01``): the door
    strips them from what it relays.
    """

    __slots__ = ("max_line", "max_tags", "_partial", "_discarding", "_discarded", "_events")

    def __init__(self, max_line: int = MAX_LINE, max_tags: int = MAX_TAGS) -> None:
        self.max_line = max_line
        self.max_tags = max_tags
        # An idle connection holds neither a buffer nor a list (most of a server's clients
        # are idle): the unfinished line's bytearray exists only while a line is cut
        # between chunks, the event list only between receive_data and events.
        self._partial: bytearray | None = None
        self._discarding = False
        self._discarded = 0
        self._events: list[Message | InputTooLong | ParseError] | None = None

    @property
    def in_line(self) -> bool:
        """True while a line has begun and not yet ended (for the slow-line timeout)."""
        return self._partial is not None or self._discarding

    def receive_data(self, data: bytes) -> None:
        events = self.frame(data)
        if events:
            if self._events is None:
                self._events = events
            else:
                self._events += events

    def frame(self, data: bytes) -> list[Message | InputTooLong | ParseError]:
        """``receive_data`` and ``events`` in one: the events ``data`` completes, returned
        rather than kept (the door's fast path; use one way or the other, not both)."""
        events: list[Message | InputTooLong | ParseError] = []
        limit = self.max_line + self.max_tags
        if self._discarding:
            newline = data.find(b"\n")
            if newline < 0:
                self._discarded += len(data)
                return events
            events.append(InputTooLong(self._discarded + newline))
            self._discarding = False
            data = data[newline + 1 :]
        partial = self._partial
        if partial is not None:
            newline = data.find(b"\n")
            if newline < 0:
                self._hold(data, limit)
                return events
            partial += data[:newline]
            self._partial = None
            self._complete(bytes(partial), events)
            data = data[newline + 1 :]
        if not data:
            return events
        lines = data.split(b"\n")
        tail = lines.pop()
        for raw in lines:
            self._complete(raw, events)
        if tail:
            self._hold(tail, limit)
        return events

    def _hold(self, data: bytes, limit: int) -> None:
        partial = self._partial
        size = len(data) if partial is None else len(partial) + len(data)
        if size > limit:
            self._partial = None
            self._discarding = True
            self._discarded = size
        elif partial is None:
            self._partial = bytearray(data)
        else:
            partial += data

    def _complete(self, raw: bytes, events: list[Message | InputTooLong | ParseError]) -> None:
        if raw[-1:] == b"\r":
            raw = raw[:-1]
        if not raw:
            return
        size = len(raw)
        if raw[:1] == b"@":
            space = raw.find(b" ")
            tags = size if space < 0 else space + 1
            if tags > self.max_tags:
                events.append(InputTooLong(size))
                return
            size -= tags
        if size + 2 > self.max_line:
            events.append(InputTooLong(size))
            return
        text = raw.decode("utf-8", "replace")
        if text.isspace():
            return
        try:
            events.append(parse(text))
        except ParseError as exc:
            events.append(exc)

    def next_event(self) -> Message | InputTooLong | ParseError | _NeedData:
        if self._events:
            return self._events.pop(0)
        return NEED_DATA

    def events(self) -> list[Message | InputTooLong | ParseError]:
        """Every event the data so far completes, in order."""
        events, self._events = self._events, None
        return events if events is not None else []

    @staticmethod
    def send(message: Message) -> bytes:
        return message.encode()


# ------------------------------------------------------------------------------ CTCP


def ctcp_action(text: str) -> str | None:
    """The action's text if ``text`` is a CTCP ACTION (``\\x01ACTION text\\x01``), else None."""
    if text[:8] == "\x01ACTION " or text == "\x01ACTION\x01" or text == "\x01ACTION":
        body = text[8:]
        return body[:-1] if body.endswith("\x01") else body
    return None


def is_ctcp(text: str) -> bool:
    return text[:1] == "\x01"


def action(text: str) -> str:
    return f"\x01ACTION {text}\x01"


# ------------------------------------------------------------------------- splitting


def split_text(text: str, budget: int) -> list[str]:
    """``text`` in pieces of at most ``budget`` UTF-8 bytes each, nothing left out and no
    character cut in two; a piece ends after a space where one is near the end."""
    if budget < 4:
        raise ValueError("budget too small for one character")
    data = text.encode()
    if len(data) <= budget:
        return [text]
    pieces = []
    start, n = 0, len(data)
    while n - start > budget:
        end = start + budget
        while data[end] & 0xC0 == 0x80:  # never inside a UTF-8 sequence
            end -= 1
        space = data.rfind(b" ", end - min(budget // 4, 64), end)
        if space > start:
            end = space + 1
        pieces.append(data[start:end].decode())
        start = end
    pieces.append(data[start:].decode())
    return pieces


def privmsg_budget(source: str, command: str, target: str) -> int:
    """Bytes left for the text in ``:source COMMAND target :text\\r\\n`` within 512."""
    return MAX_LINE - len(f":{source} {command} {target} :".encode()) - 2
