"""The terminal client: ``python -m geventchat.client`` (console script ``geventchat``).

Two modes, chosen by what stdin and stdout are:

* **Terminal** (both are terminals): a prompt_toolkit prompt with history, Tab completion
  and coloured nicknames; incoming lines are printed above the input line without
  breaking what is being typed. See :mod:`geventchat.client.ui`.
* **Pipe** (otherwise): plain lines in from stdin, plain lines out, no prompt, no colour,
  each received line flushed at once, so scripts can drive it.

Why no gevent here: prompt_toolkit runs on asyncio, and gevent's monkey patching would
replace the very socket, select and threading primitives that asyncio's event loop and
prompt_toolkit's input handling rely on; without patching, a gevent hub and an asyncio
loop cannot both block in one thread. So the terminal mode runs its network side as an
asyncio task in prompt_toolkit's own event loop (one thread, no locks, no cross-thread
calls), and the pipe mode needs no library at all: one ``selectors`` loop over stdin and
the socket, which keeps the order of the printed lines exact.

Whatever mode, every received line goes through :func:`geventchat.core.protocol.terminal_safe`
before it is shown: no escape sequence, C0/C1 control or bidi override from the network
ever reaches the terminal.

Exit status: 0 after ``exit``/``/quit``/end of input/Ctrl-C/Ctrl-D, 1 when the server
closed the connection first, 2 when it cannot connect (or a bad flag).
"""

from __future__ import annotations

import argparse
import os
import sys

from geventchat import __version__
from geventchat.client.base import (
    CONNECTED,
    DISCONNECTED,
    EXIT_CONNECT,
    EXIT_OK,
    ConnectError,
    FirstContact,
    PasswordFileError,
    connect,
    greeting_lines,
    interrupted_line,
    read_password_file,
    run_pipe,
    tls_context,
)
from geventchat.core import limits, protocol

# ------------------------------------------------------------------------- arguments


def _port(value: str) -> int:
    try:
        port = int(value, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, not {port}")
    return port


def _nick(value: str) -> str:
    if not protocol.valid_nick(value):
        raise argparse.ArgumentTypeError(f"invalid nickname {value!r} (1 to {limits.MAX_NICK} letters, digits or _-[]{{}}|^)")
    return value


def _room(value: str) -> str:
    if not protocol.valid_room(value):
        raise argparse.ArgumentTypeError(f"invalid room {value!r} (1 to {limits.MAX_ROOM} letters, digits or _-#.)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geventchat",
        usage="%(prog)s [options]  (--help lists them)",
        description="Terminal client for the geventchat server. In a terminal: an input line "
        "with history (up arrow) and Tab completion of /commands and nicknames. With stdin "
        "or stdout not a terminal: plain lines in and out, for scripts.",
        epilog="Type 'exit' (or /quit, Ctrl-D, Ctrl-C) to leave. Exit status: 0 after leaving, "
        "1 if the server closed the connection, 2 if it cannot connect.",
    )
    parser.add_argument("--host", default=limits.DEFAULT_HOST, help="server address (default %(default)s)")
    parser.add_argument("--port", type=_port, default=limits.DEFAULT_PORT, help="server port (default %(default)s)")
    parser.add_argument("--nick", type=_nick, help="set this nickname on connect (/nick NAME)")
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help="log in to the registered --nick on connect with the password on FILE's first line (FILE must be private: chmod 600)",
    )
    parser.add_argument("--room", type=_room, help="enter this room on connect (/join ROOM)")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS, verifying the server's certificate and host name (system trust unless --cafile)",
    )
    parser.add_argument(
        "--cafile", metavar="FILE", help="trust the CA certificates in this PEM file instead of the system's (implies --tls)"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


# -------------------------------------------------------------------------------- main


def _stdin_fd() -> int | None:
    try:
        return sys.stdin.fileno() if sys.stdin is not None else None
    except (OSError, ValueError):
        return None


def is_interactive() -> bool:
    """Terminal mode needs a terminal on both sides; anything else is pipe mode."""
    try:
        return bool(sys.stdin and sys.stdin.isatty() and sys.stdout and sys.stdout.isatty())
    except (OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    password = None
    if args.password_file is not None:
        if not args.nick:
            parser.error("--password-file needs --nick")
        try:
            password = read_password_file(args.password_file)
        except PasswordFileError as exc:
            print(exc, file=sys.stderr)
            return EXIT_CONNECT
    interactive = is_interactive()
    try:
        context = tls_context(args.cafile) if args.tls or args.cafile else None
        # In a terminal, asyncio does the TLS handshake on the plain socket (it cannot
        # take over an ssl.SSLSocket); in pipe mode it is done here.
        sock = connect(args.host, args.port, tls=None if interactive else context)
    except ConnectError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONNECT
    except KeyboardInterrupt:  # Ctrl-C on a connect that hangs (a host that drops SYNs...)
        print(interrupted_line(args.host, args.port), file=sys.stderr, flush=True)
        return EXIT_CONNECT
    first = greeting_lines(args.nick, args.room, password)
    connected_line = CONNECTED.format(host=args.host, port=args.port)
    try:
        if interactive:
            try:
                from geventchat.client.ui import run_terminal  # prompt_toolkit only when it is needed
            except KeyboardInterrupt:  # Ctrl-C at once: nothing was shown or sent yet
                print(interrupted_line(args.host, args.port), file=sys.stderr, flush=True)
                return EXIT_CONNECT

            contact = FirstContact(args.host, args.port)
            if context is not None:
                return run_terminal(
                    sock,
                    first,
                    tls=context,
                    server_hostname=args.host,
                    connected_line=connected_line,
                    port=args.port,
                    contact=contact,
                )
            print(connected_line, flush=True)
            return run_terminal(sock, first, contact=contact)
        print(connected_line, flush=True)
        try:
            return run_pipe(
                sock, _stdin_fd(), sys.stdout.buffer, first, contact=FirstContact(args.host, args.port), err=sys.stderr.buffer
            )
        except KeyboardInterrupt:
            try:
                sock.send(b"exit\n")
            except OSError:
                pass
            print(DISCONNECTED, flush=True)
            return EXIT_OK
    except BrokenPipeError:
        # stdout went away (``| head``): nothing more can be shown; stop quietly.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    finally:
        sock.close()
