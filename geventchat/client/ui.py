"""Terminal mode of the client: a prompt_toolkit input line with the chat scrolling above.

The network side is an asyncio task in prompt_toolkit's own event loop (see
:mod:`geventchat.client` for why not gevent or a thread). Received lines are printed
above the prompt inside :func:`prompt_toolkit.application.in_terminal`, which erases the
input line, prints, and draws it again exactly as it was, so whatever is being typed is
never broken. Each received chunk is printed in one go, in order.

Safety: formatted text is only ever built from :func:`geventchat.protocol.terminal_safe`
text, and the styles are fixed class names or colours from a fixed palette (never
derived from received text), so nothing from the network can become a control
sequence, a style or markup.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import sys
import time
import zlib
from collections.abc import Iterable

from prompt_toolkit import PromptSession
from prompt_toolkit.application import in_terminal
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText, StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.layout.processors import Processor, Transformation, TransformationInput
from prompt_toolkit.layout.utils import explode_text_fragments
from prompt_toolkit.output import Output
from prompt_toolkit.renderer import print_formatted_text as render_formatted_text
from prompt_toolkit.styles import Style

from geventchat.client.base import (
    CLOSED_BY_SERVER,
    CONNECT_TIMEOUT,
    DISCONNECTED,
    EXIT_CLOSED,
    EXIT_CONNECT,
    EXIT_OK,
    LEAVE_TIMEOUT,
    MAX_SERVER_LINE,
    RECV_SIZE,
    WELCOME_WAIT,
    FirstContact,
    interrupted_line,
    is_leave,
    show_text,
    tls_failure_line,
)
from geventchat.core import protocol
from geventchat.core.accountrules import is_secret_line, secret_start
from geventchat.core.history import BlockReader, HistoryLine

STYLE = Style.from_dict(
    {
        "time": "#888888",
        "notice": "ansicyan",
        "error": "ansired bold",
        "action": "italic",
        "private": "ansimagenta bold",
        "private.text": "bold",
        "other": "",
        "mention": "bold underline",
        "prompt": "bold",
        "command": "#888888",
        # a replay block (recent messages from before this client came): dimmed, never
        # highlighted, so that it does not read as new
        "history": "#808080",
        "history.time": "#606060",
    }
)

# Nicknames get one of these, by a stable hash of the folded name: the same nick has the
# same colour on every line and in every run. Cyan (notices), magenta (private messages)
# and red (errors) are kept for the server's lines.
NICK_COLOURS = (
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansibrightgreen",
    "ansibrightyellow",
    "ansibrightblue",
)


def nick_style(nick: str) -> str:
    """The style of a nickname: a palette colour chosen by a stable hash (crc32)."""
    colour = NICK_COLOURS[zlib.crc32(protocol.fold(nick).encode("utf-8", "replace")) % len(NICK_COLOURS)]
    return f"{colour} bold"


def mentions(text: str, me: str) -> bool:
    """True if text names ``me`` as a whole word (case ignored)."""
    return bool(me) and re.search(r"(?<![\w\[\]{}|^-])" + re.escape(me) + r"(?![\w\[\]{}|^-])", text, re.I) is not None


def format_line(text: str, now: float | None = None, me: str = "") -> StyleAndTextTuples:
    """Formatted text for one received line; ``text`` is made terminal-safe here again.

    A chat line that names ``me`` (the client's own nickname) is highlighted.
    """
    text = protocol.terminal_safe(text)
    stamp = time.strftime("%H:%M ", time.localtime(now))
    parts: StyleAndTextTuples = [("class:time", stamp)]
    line = protocol.classify(text)
    if line.kind == "chat":
        body = "class:mention" if mentions(line.text, me) else ""
        parts += [(nick_style(line.nick), line.nick), (body, ": " + line.text)]
    elif line.kind == "action":
        parts += [("class:action", "* "), (nick_style(line.nick) + " italic", line.nick), ("class:action", " " + line.text)]
    elif line.kind == "private":
        parts += [("class:private", f"*{line.nick}*"), ("class:private.text", " " + line.text)]
    elif line.kind == "error":
        parts += [("class:error", "*** Error: " + line.text)]
    elif line.kind == "notice":
        parts += [("class:notice", "*** " + line.text)]
    else:
        parts += [("class:other", text)]
    return parts


def history_line(text: str, kind: str | None, last: HistoryLine | None, now: float | None = None) -> StyleAndTextTuples:
    """A line of a replay block (``kind`` from ``BlockReader.feed``), dimmed: its head and
    end as they came, each kept line with the time it was relayed, in local time (with the
    date when it was not today)."""
    if kind != "entry" or last is None:
        return [
            ("class:history.time", time.strftime("%H:%M ", time.localtime(now))),
            ("class:history", protocol.terminal_safe(text)),
        ]
    relayed = time.localtime(last.time)
    today = time.localtime(now)
    fmt = "%H:%M " if relayed[:3] == today[:3] else "%Y-%m-%d %H:%M "
    return [("class:history.time", time.strftime(fmt, relayed)), ("class:history", protocol.terminal_safe(last.line))]


def own_line(text: str, me: str, now: float | None = None) -> StyleAndTextTuples:
    """Formatted text for a line this client sent, shown as the others see it, with the same
    time stamp as received lines: ``HH:MM me: text``, ``HH:MM * me waves``; a command as
    typed (dimmed), a /register, /login or /password with its password hidden."""
    text = protocol.terminal_safe(text)
    name = me or "you"
    request = protocol.parse_line(text)
    if isinstance(request, protocol.Chat):
        return format_line(f"{name}: {request.text}", now)
    if isinstance(request, protocol.Command) and request.name == "me":
        return format_line(f"* {name} {request.args[0]}", now)
    if is_secret_line(text):
        words = text.split()
        shown = words[:2] if words[0].lower() == "/login" else words[:1]
        text = " ".join(shown + ["********"])
    return [("class:time", time.strftime("%H:%M ", time.localtime(now))), ("class:command", text)]


# ------------------------------------------------------------------------- nicknames

_WELCOME_RE = re.compile(r"Welcome, (\S+)! You are in (\S+)\.")
_YOU_ARE_RE = re.compile(r"You are now (known as|in) (\S+)")
_RENAMED_RE = re.compile(r"(\S+) is now known as (\S+)")
_PRESENCE_RE = re.compile(r"(\S+) (joined|left|quit)\b")
_MEMBERS_RE = re.compile(r"Members of \S+ \(\d+\): (.*)")  # a /who reply (or one of its lines)


class ChatState:
    """What the client learns from the lines it sees: its own nick and the others' nicks."""

    def __init__(self) -> None:
        self.me = ""
        self.room = ""
        self.nicks: dict[str, str] = {}  # folded -> as spelled

    def _add(self, nick: str) -> None:
        if protocol.valid_nick(nick) and protocol.fold(nick) != protocol.fold(self.me):
            self.nicks[protocol.fold(nick)] = nick

    def _drop(self, nick: str) -> None:
        self.nicks.pop(protocol.fold(nick), None)

    def see(self, text: str) -> None:
        line = protocol.classify(text)
        if line.kind in ("chat", "action", "private"):
            self._add(line.nick)
        elif line.kind == "notice":
            match = _WELCOME_RE.match(line.text)
            if match and protocol.valid_nick(match.group(1)) and protocol.valid_room(match.group(2)):
                self.me, self.room = match.groups()
                return
            match = _YOU_ARE_RE.fullmatch(line.text)
            if match:
                what, name = match.groups()
                if what == "in" and protocol.valid_room(name):
                    self.room = name
                elif what == "known as" and protocol.valid_nick(name):
                    self.me = name
                return
            match = _RENAMED_RE.fullmatch(line.text)
            if match:
                old, new = match.groups()
                if protocol.fold(old) == protocol.fold(self.me):
                    self.me = new
                else:
                    self._drop(old)
                    self._add(new)
                return
            match = _MEMBERS_RE.fullmatch(line.text)
            if match:  # the names of those who have said nothing yet, for Tab
                for nick in match.group(1).split():
                    self._add(nick)
                return
            match = _PRESENCE_RE.match(line.text)
            if match:
                nick, what = match.groups()
                if what == "joined":
                    self._add(nick)
                elif what == "quit":
                    self._drop(nick)


_NICK_TAIL_RE = re.compile(r"[A-Za-z0-9_\-\[\]{}|^]*\Z")


class ChatCompleter(Completer):
    """Tab completes ``/commands`` at the start of the line, and nicknames seen anywhere."""

    def __init__(self, state: ChatState) -> None:
        self.state = state

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        before = document.text_before_cursor
        if before.startswith("/") and " " not in before:
            typed = before.lower()
            for spec in protocol.COMMAND_SPECS.values():
                word = "/" + spec.name
                if word.startswith(typed):
                    yield Completion(word + " ", -len(before), display=word, display_meta=spec.summary)
            return
        word = _NICK_TAIL_RE.search(before).group()  # type: ignore[union-attr]
        if not word:
            return
        folded = word.lower()
        for key in sorted(self.state.nicks):
            if key.startswith(folded):
                yield Completion(self.state.nicks[key], -len(word))


# ---------------------------------------------------------------------------- running


class _ServerClosed(Exception):
    pass


class MaskSecret(Processor):
    """Shows what is typed after ``/login NICK ``, ``/register `` or ``/password `` as
    ``*`` (one per character, so the cursor stays put); the line stays masked on the
    screen once sent."""

    def apply_transformation(self, transformation_input: TransformationInput) -> Transformation:
        start = secret_start(transformation_input.document.text)
        if start is None:
            return Transformation(transformation_input.fragments)
        masked: StyleAndTextTuples = []
        for index, (style, char, *_) in enumerate(explode_text_fragments(transformation_input.fragments)):
            masked.append((style, "*" if index >= start and not char.isspace() else char))
        return Transformation(masked)


class SecretFreeHistory(InMemoryHistory):
    """Input history that never keeps a ``/register``, ``/login`` or ``/password`` line."""

    def append_string(self, string: str) -> None:
        if not is_secret_line(string):
            super().append_string(string)


class TerminalClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, contact: FirstContact | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.state = ChatState()
        self.blocks = BlockReader()  # which received lines are a replay block (history)
        self.leaving = False
        self.closed = asyncio.Event()
        self.contact = contact  # the server's first bytes checked: is it a chat server?
        self.wrong_server = ""  # the error line when it is not
        self.session: PromptSession[str] = PromptSession(
            history=SecretFreeHistory(),
            input_processors=[MaskSecret()],
            completer=ChatCompleter(self.state),
            complete_while_typing=False,
            style=STYLE,
            # The input line goes when it is sent (it comes back as a time-stamped line of
            # its own, see own_line) or abandoned (Ctrl-C, Ctrl-D): no half line is left.
            erase_when_done=True,
        )

    @property
    def output(self) -> Output:
        return self.session.app.output

    def _print(self, lines: list[StyleAndTextTuples]) -> None:
        output = self.output
        for fragments in lines:
            render_formatted_text(
                output, FormattedText(fragments + [("", "\n")]), STYLE, color_depth=output.get_default_color_depth()
            )
        output.flush()

    async def show(self, texts: list[str]) -> None:
        """Print lines above the prompt (or plainly when no prompt is running)."""
        lines = []
        for text in texts:
            kind = self.blocks.feed(text)
            if kind is not None:  # a replay block: history, not news
                lines.append(history_line(text, kind, self.blocks.last))
                continue
            self.state.see(text)
            lines.append(format_line(text, me=self.state.me))
        if self.session.app.is_running:
            async with in_terminal():
                self._print(lines)
        else:
            self._print(lines)

    async def read_loop(self) -> None:
        framer = protocol.LineFramer(MAX_SERVER_LINE)
        try:
            while True:
                try:
                    data = await self.reader.read(RECV_SIZE)
                except OSError:
                    data = b""
                if not data:
                    if framer.in_line:
                        await self.show([show_text(e) for e in framer.receive_data(b"\n")])
                    break
                if self.contact is not None and not self.contact.received:
                    wrong = self.contact.receive(data)
                    if wrong is not None:
                        self.wrong_server = wrong
                        break
                await self.show([show_text(e) for e in framer.receive_data(data)])
        finally:
            self.closed.set()
            self._stop_prompt()

    def _stop_prompt(self) -> None:
        if self.leaving:
            return
        app = self.session.app
        if app.is_running and not app.is_done:
            try:
                app.exit(exception=_ServerClosed())
            except Exception:  # the prompt was finishing anyway
                pass

    def prompt(self) -> StyleAndTextTuples:
        """``[room] nick> `` once known (names checked against the protocol's grammar)."""
        if not self.state.me:
            return [("class:prompt", "> ")]
        return [
            ("class:prompt", f"[{self.state.room}] "),
            (nick_style(self.state.me), self.state.me),
            ("class:prompt", "> "),
        ]

    def send(self, text: str) -> None:
        if not self.closed.is_set():
            self.writer.write(text.encode("utf-8", "replace") + b"\n")

    async def show_own(self, texts: list[str]) -> None:
        """Print the lines just sent, above the prompt (whose input line was erased)."""
        me = self.state.me
        self._print([own_line(text, me) for text in texts])

    async def _hint_if_silent(self) -> None:
        """Nothing from the server for WELCOME_WAIT seconds: say it may not be a chat port."""
        await asyncio.sleep(WELCOME_WAIT)
        hint = self.contact.silence_line() if self.contact is not None else None
        if hint and not self.closed.is_set():
            await self.show([hint])

    async def leave(self, say_exit: bool) -> int:
        self.leaving = True
        if say_exit:
            self.send("exit")
        try:
            await asyncio.wait_for(self.closed.wait(), LEAVE_TIMEOUT)
        except asyncio.TimeoutError:
            pass
        print(DISCONNECTED, flush=True)
        return EXIT_OK

    async def run(self, first: bytes) -> int:
        reading = asyncio.ensure_future(self.read_loop())
        hint = asyncio.ensure_future(self._hint_if_silent())
        if first:
            self.writer.write(first)

        def stop_if_closed() -> None:
            if self.closed.is_set():
                self._stop_prompt()

        try:
            while True:
                if self.closed.is_set():
                    break
                try:
                    typed = await self.session.prompt_async(self.prompt, pre_run=stop_if_closed)
                except _ServerClosed:
                    break
                except (EOFError, KeyboardInterrupt):
                    return await self.leave(say_exit=True)
                sent = [line for line in typed.splitlines() if line.strip()]
                for index, line in enumerate(sent):
                    self.send(line)
                    if is_leave(line):
                        await self.show_own(sent[: index + 1])
                        return await self.leave(say_exit=False)
                await self.show_own(sent)
            await reading
            if self.wrong_server:
                print(self.wrong_server, file=sys.stderr, flush=True)
                return EXIT_CONNECT
            print(CLOSED_BY_SERVER, flush=True)
            return EXIT_CLOSED
        finally:
            self.writer.close()
            reading.cancel()
            hint.cancel()


def run_terminal(
    sock: socket.socket,
    first: bytes = b"",
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    connected_line: str | None = None,
    port: int | None = None,
    contact: FirstContact | None = None,
) -> int:
    """Chat in this terminal over the connected socket; returns the exit status.

    With ``tls``, the handshake (and the certificate's verification) is asyncio's, on the
    plain socket given; ``connected_line`` is printed once the connection is usable.
    """
    usable = tls is None  # a TLS connection is usable only after its handshake

    async def main() -> int:
        nonlocal usable
        if tls is None:
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_SERVER_LINE)
        else:
            try:
                reader, writer = await asyncio.open_connection(
                    sock=sock,
                    limit=MAX_SERVER_LINE,
                    ssl=tls,
                    server_hostname=server_hostname,
                    ssl_handshake_timeout=CONNECT_TIMEOUT,
                )
            except (OSError, asyncio.TimeoutError) as exc:
                print(tls_failure_line(server_hostname or "", sock_port, exc), file=sys.stderr, flush=True)
                return EXIT_CONNECT
        usable = True
        if connected_line:
            print(connected_line, flush=True)
        return await TerminalClient(reader, writer, contact).run(first)

    try:
        sock_port = sock.getpeername()[1]
    except OSError:
        sock_port = 0

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:  # Ctrl-C while no prompt was running
        if not usable:  # during a TLS handshake that hangs: it never connected
            print(interrupted_line(server_hostname or "", port or sock_port), file=sys.stderr, flush=True)
            return EXIT_CONNECT
        print(DISCONNECTED, flush=True)
        return EXIT_OK
