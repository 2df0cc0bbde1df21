"""What both client modes share (connecting, TLS, the lines they print), and the pipe mode.

See :mod:`geventchat.client.cli` for the modes."""

from __future__ import annotations

import errno
import os
import selectors
import socket
import ssl
import time
from typing import BinaryIO

from geventchat.core import protocol

CONNECTED = "Connected to chat server at {host}:{port}. Type 'exit' to leave."
DISCONNECTED = "Disconnected from server"
CLOSED_BY_SERVER = "Connection closed by server"

EXIT_OK = 0
EXIT_CLOSED = 1
EXIT_CONNECT = 2

# The longest line taken from the server. Its lines are at most --max-line plus a
# nickname; this leaves room for any sane configuration while bounding memory.
MAX_SERVER_LINE = 64 * 1024
RECV_SIZE = 64 * 1024
CONNECT_TIMEOUT = 10.0
# After sending "exit": how long to wait for the server to close the connection, so that
# lines already on their way are still shown.
LEAVE_TIMEOUT = 2.0
# Pipe mode stops reading stdin while this much is waiting to be sent.
SEND_HIGH_WATER = 256 * 1024
# A chat server welcomes at once: after this long without a byte, the client says that the
# port may not be a chat port (it goes on waiting).
WELCOME_WAIT = 5.0


class ConnectError(Exception):
    """The connection could not be made; the message is the one line to show."""


def tls_context(cafile: str | None) -> ssl.SSLContext:
    """A client context: the system's trust (or ``cafile``'s), host names verified."""
    try:
        context = ssl.create_default_context(cafile=cafile)
    except FileNotFoundError:
        raise ConnectError(f"Error: --cafile {cafile}: no such file") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConnectError(f"Error: --cafile {cafile}: not a PEM CA certificate file ({_reason(exc)})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def interrupted_line(host: str, port: int) -> str:
    """The one line shown when Ctrl-C stops a connect (or TLS handshake) that hangs."""
    return f"Error: cannot connect to {host}:{port}: interrupted"


def tls_failure_line(host: str, port: int, exc: BaseException) -> str:
    """The one line shown when the TLS handshake fails (an untrusted certificate...)."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"Error: TLS handshake with {host}:{port} failed: timed out"
    return f"Error: TLS handshake with {host}:{port} failed: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# ------------------------------------------------------------------------- connecting


def connect(host: str, port: int, timeout: float = CONNECT_TIMEOUT, tls: ssl.SSLContext | None = None) -> socket.socket:
    """A connected, blocking socket, or ConnectError with one line saying why.

    With ``tls`` the handshake is done here (bounded by ``timeout``) and the server's
    certificate and host name are verified: the result is an ``ssl.SSLSocket``.
    """
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except (OSError, OverflowError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ConnectError(f"Error: cannot connect to {host}:{port}: {reason}") from None
    if tls is not None:
        try:
            sock = tls.wrap_socket(sock, server_hostname=host)
        except (OSError, ValueError) as exc:
            sock.close()
            raise ConnectError(tls_failure_line(host, port, exc)) from None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def greeting_lines(nick: str | None, room: str | None, password: str | None = None) -> bytes:
    """What the client sends right after connecting for --nick (with --password-file: a
    login) and --room."""
    out = b""
    if nick and password is not None:
        out += f"/login {nick} {password}\n".encode()
    elif nick:
        out += f"/nick {nick}\n".encode("ascii")
    if room:
        out += f"/join {room}\n".encode("ascii")
    return out


class PasswordFileError(Exception):
    """A --password-file that cannot be used; the text is the one line for stderr."""


def read_password_file(path: str) -> str:
    """The password in ``path``: its first line without the line ending. Refused, as ssh
    refuses a private key, when others than its owner may read (or write) it."""
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if mode & 0o077:
                raise PasswordFileError(
                    f"Error: password file {path} is accessible by others (mode {mode & 0o777:04o}); "
                    f"make it private: chmod 600 {path}"
                )
            first = file.readline(4096)
    except OSError as exc:
        raise PasswordFileError(f"Error: cannot read password file {path}: {exc.strerror or exc}") from None
    password = first.decode("utf-8", "replace").rstrip("\r\n")
    if not password or any(ch.isspace() for ch in password):
        raise PasswordFileError(f"Error: password file {path}: its first line must be the password (no spaces)")
    return password


class FirstContact:
    """Is the server at the other end a chat server? Judged from its first bytes (sans-IO).

    A web port (``--web-port``, or any HTTP server) answers whatever the client sent with
    ``HTTP/1.1 400 ...``, or says nothing at all while it waits for a request; an IRC server
    begins with ``:server NOTICE ...`` or ``PING``. Without this, the client shows such
    replies as chat, or waits in silence."""

    def __init__(self, host: str, port: int) -> None:
        self.where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.received = False

    def receive(self, data: bytes) -> str | None:
        """The one error line to show (then leave, exit status 2) if the server's first
        bytes are another protocol's; None when they may be chat."""
        if self.received or not data:
            return None
        self.received = True
        if data.startswith(b"HTTP/"):
            return (
                f"Error: {self.where} answers in HTTP: it is a web port (open http://{self.where}/ in a browser), "
                "not the chat port"
            )
        if data.startswith((b":", b"PING ", b"NOTICE ", b"ERROR :")):
            return f"Error: {self.where} speaks IRC: it is an IRC port (use an IRC client there), not the chat port"
        return None

    def silence_line(self) -> str | None:
        """The line to show once nothing came for WELCOME_WAIT seconds (None if something did)."""
        if self.received:
            return None
        return (
            f"*** No welcome from {self.where} after {WELCOME_WAIT:g} s: is it the chat port? "
            "(a web port speaks HTTP, a TLS chat port needs --tls)"
        )


def is_leave(line: str) -> bool:
    """True for a line after which the server closes the connection (exit, /quit)."""
    return isinstance(protocol.parse_line(line), protocol.Quit)


def show_text(event: protocol.FramerEvent) -> str:
    """A received line as plain text that is safe for a terminal."""
    if isinstance(event, protocol.LineTooLong):
        return f"*** (a line of {event.size} bytes from the server was too long to show)"
    return protocol.terminal_safe(event)


# -------------------------------------------------------------------------- pipe mode


class _Printer:
    """Writes plain lines to a binary stream, flushed at once; quiet once stdout is gone."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.broken = False

    def lines(self, texts: list[str]) -> None:
        if self.broken or not texts:
            return
        try:
            self.out.write("".join(text + "\n" for text in texts).encode("utf-8", "replace"))
            self.out.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.broken = True


def pending(sock: socket.socket) -> int:
    """Bytes a TLS socket has decrypted and not yet handed out (0 for plain sockets)."""
    return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0


def run_pipe(
    sock: socket.socket,
    stdin_fd: int | None,
    out: BinaryIO,
    first: bytes = b"",
    contact: FirstContact | None = None,
    err: BinaryIO | None = None,
) -> int:
    """Plain lines from stdin_fd to the server and from the server to out.

    One thread, one selector: the order of what is printed is the order it arrived, and
    the last line (``Disconnected from server`` or ``Connection closed by server``) comes
    after every line received before it. ``contact``: checks the server's first bytes
    (another protocol: one line on ``err`` and EXIT_CONNECT; silence: a hint on ``err``).
    """
    silence_deadline = time.monotonic() + WELCOME_WAIT if contact is not None else None
    printer = _Printer(out)
    framer = protocol.LineFramer(MAX_SERVER_LINE)
    outbuf = bytearray(first)  # bytes waiting to be sent
    pending_input = bytearray()  # an unfinished line from stdin
    stdin_open = stdin_fd is not None
    leave_deadline: float | None = None  # set once "exit" is queued
    passing_long_line = False  # inside a stdin line too long to hold: pass it on as it comes

    def queue_input(data: bytes, at_eof: bool) -> None:
        nonlocal leave_deadline, passing_long_line
        if passing_long_line:
            newline = data.find(b"\n")
            if newline < 0:
                outbuf.extend(data)
                data = b""
            else:
                outbuf.extend(data[: newline + 1])
                data = data[newline + 1 :]
                passing_long_line = False
        pending_input.extend(data)
        lines: list[bytes | bytearray] = [*pending_input.split(b"\n")]
        rest = lines.pop()
        pending_input[:] = rest
        if at_eof and rest:
            lines.append(bytes(rest))
            pending_input.clear()
        elif len(rest) > MAX_SERVER_LINE:
            # Longer than any server takes: hand it on unread (the server refuses it whole)
            # rather than hold it; memory stays bounded whatever stdin holds.
            passing_long_line = True
            pending_input.clear()
            lines.append(bytes(rest))
        for index, raw in enumerate(lines):
            if passing_long_line and index == len(lines) - 1:
                outbuf.extend(raw)
                break
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            text = raw.decode("utf-8", "replace")
            if not text.strip():
                continue
            outbuf.extend(raw + b"\n")
            if is_leave(text):
                leave_deadline = time.monotonic() + LEAVE_TIMEOUT
                return
        if at_eof:
            if passing_long_line:
                outbuf.extend(b"\n")
                passing_long_line = False
            outbuf.extend(b"exit\n")
            leave_deadline = time.monotonic() + LEAVE_TIMEOUT

    def server_gone() -> int:
        if framer.in_line:  # a last line without its "\n"
            printer.lines([show_text(e) for e in framer.receive_data(b"\n")])
        if leave_deadline is not None:
            printer.lines([DISCONNECTED])
            return EXIT_OK
        printer.lines([CLOSED_BY_SERVER])
        return EXIT_CLOSED

    sock.setblocking(False)
    selector = selectors.PollSelector() if hasattr(selectors, "PollSelector") else selectors.SelectSelector()
    stdin_registered = False
    try:
        selector.register(sock, selectors.EVENT_READ)
        if not stdin_open:
            queue_input(b"", at_eof=True)
        while True:
            # Read stdin only while not leaving and not too much is waiting to be sent.
            want_stdin = stdin_open and leave_deadline is None and len(outbuf) < SEND_HIGH_WATER
            if want_stdin != stdin_registered:
                if want_stdin:
                    try:
                        selector.register(stdin_fd, selectors.EVENT_READ)  # type: ignore[arg-type]
                    except (OSError, ValueError):  # not pollable: behave as end of input
                        stdin_open = want_stdin = False
                        queue_input(b"", at_eof=True)
                else:
                    selector.unregister(stdin_fd)  # type: ignore[arg-type]
                stdin_registered = want_stdin
            selector.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if outbuf else 0))
            timeout = None
            if leave_deadline is not None:
                timeout = leave_deadline - time.monotonic()
                if timeout <= 0:
                    printer.lines([DISCONNECTED])
                    return EXIT_OK
            if silence_deadline is not None:
                wait = silence_deadline - time.monotonic()
                if wait <= 0:
                    hint = contact.silence_line() if contact is not None else None
                    if hint and err is not None:
                        _Printer(err).lines([hint])
                    silence_deadline = None
                else:
                    timeout = wait if timeout is None else min(timeout, wait)
            for key, mask in selector.select(timeout):
                if key.fileobj is sock:
                    if mask & selectors.EVENT_READ:
                        try:
                            data = sock.recv(RECV_SIZE)
                            # TLS: decrypted bytes the descriptor no longer shows.
                            while data and pending(sock):
                                data += sock.recv(RECV_SIZE)
                        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                            continue
                        except OSError:
                            data = b""
                        if not data:
                            return server_gone()
                        if contact is not None and not contact.received:
                            silence_deadline = None
                            wrong = contact.receive(data)
                            if wrong is not None:
                                if err is not None:
                                    _Printer(err).lines([wrong])
                                return EXIT_CONNECT
                        printer.lines([show_text(e) for e in framer.receive_data(data)])
                    if mask & selectors.EVENT_WRITE and outbuf:
                        try:
                            sent = sock.send(outbuf)
                        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                            continue
                        except OSError:
                            return server_gone()
                        del outbuf[:sent]
                elif stdin_registered:
                    try:
                        data = os.read(stdin_fd, RECV_SIZE)  # type: ignore[arg-type]
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        if exc.errno not in (errno.EIO, errno.EBADF):
                            raise
                        data = b""
                    if not data:
                        stdin_open = False
                    queue_input(data, at_eof=not data)
    finally:
        selector.close()
