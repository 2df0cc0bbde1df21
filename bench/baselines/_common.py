"""What the baseline servers share: flags, the listening line, clean exit on a bad address."""

from __future__ import annotations

import argparse
import socket
import sys


def parse_args(description: str, argv=None, extra=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=12345, help="port to bind, 0 for a free one (default 12345)")
    if extra:
        extra(parser)
    return parser.parse_args(argv)


def bind_listener(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """A listening socket, or one line on stderr and exit status 1."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        return sock
    except OSError as exc:
        if getattr(exc, "errno", None) == 98:
            msg = f"error: port {port} is already in use"
        else:
            msg = f"error: cannot listen on {host}:{port}: {exc.strerror or exc}"
        print(msg, file=sys.stderr, flush=True)
        raise SystemExit(1)


def welcome(nick: str) -> bytes:
    return f"*** Welcome, {nick}! You are in lobby. Type /help for commands.\n".encode()


def say(text: str) -> None:
    print(text, flush=True)
