"""The line door: the line protocol over TCP (or TLS), one ``Session`` read by one ``Reader``.

Everything a door needs is shared (``session.py``: the member, its bounded outbox,
writer and close; ``reader.py``: the read loop, parking, rate limit, stop); what is the
line door's own is its codec, ``codec.LINE_CODEC`` (``LineFramer``, ``parse_line``, the
command table; hub lines go out as they are). Another door is a codec and a handler that
makes the same two pieces (see ``web.py``).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable

import gevent

from geventchat.chat.hub import Hub
from geventchat.core.config import Settings
from geventchat.doors.codec import LINE_CODEC
from geventchat.doors.reader import Reader
from geventchat.doors.session import Session, describe_peer

__all__ = ["line_connection", "describe_peer", "tune", "tune_listener"]


def tune(sock: socket.socket) -> None:
    """What every accepted connection needs, on its socket."""
    try:
        # Lines are small and already batched per loop turn: send them at once.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Find peers that vanished without a word (power loss, dropped NAT state).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except OSError:
        pass  # not a TCP socket (or already reset): nothing to tune


def tune_listener(listener: socket.socket) -> bool:
    """``tune`` a listening socket; True if the sockets it accepts inherit that (Linux
    copies both options to them), so that they need no ``tune`` of their own: two system
    calls fewer per connection."""
    tune(listener)
    try:
        return (
            sys.platform.startswith("linux")
            and listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            and listener.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        )
    except OSError:
        return False


def line_connection(
    sock: socket.socket,
    address: tuple,
    hub: Hub,
    settings: Settings,
    *,
    spawn: Callable[..., gevent.Greenlet] = gevent.spawn,
    on_closed: Callable[[Reader], None] | None = None,
    acts_in_loop: bool = False,
) -> Reader:
    """A line client on ``sock``: its session and its reader (``serve()`` it in a greenlet);
    ``acts_in_loop``: see ``Reader``."""
    return Reader(Session(sock, address, hub, settings, LINE_CODEC), spawn=spawn, on_closed=on_closed, acts_in_loop=acts_in_loop)
