"""The line door: the line protocol over TCP (or TLS), one ``Session`` read by one ``Reader``.

Everything a door needs is shared (``session.py``: the member, its bounded outbox,
writer and close; ``reader.py``: the read loop, parking, rate limit, stop); what is the
line door's own is its codec, ``codec.LINE_CODEC`` (``LineFramer``, ``parse_line``, the
command table; hub lines go out as they are). Another door is a codec and a handler that
makes the same two pieces (see ``web.py``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import gevent

from geventchat.chat.hub import Hub
from geventchat.core.config import Settings
from geventchat.doors.codec import LINE_CODEC
from geventchat.doors.reader import Reader
from geventchat.doors.session import Session, describe_peer

__all__ = ["line_connection", "describe_peer"]


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
