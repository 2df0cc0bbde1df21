"""What the listening parts of the server share: the backlog, the bind error lines, and
the lifecycle logger whose lines scripts wait for."""

from __future__ import annotations

import errno
import logging
import socket

from gevent import socket as gsocket

from geventchat.doors.session import describe_peer

# "Server listening on" and "Server stopped" show at every --log-level: scripts wait for
# the first to learn the port and for the second to know the stop was clean.
lifecycle = logging.getLogger("geventchat.lifecycle")

# Pending connections the kernel may hold before accept(): large, so that a storm of
# thousands of clients connecting at once is queued rather than dropped into SYN retries
# (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 4096


def describe_bind_error(host: str, port: int, exc: OSError) -> str:
    where = describe_peer((host, port))
    if exc.errno == errno.EADDRINUSE:
        return f"Error: cannot listen on {where}: port {port} is already in use"
    if exc.errno == errno.EACCES:
        return f"Error: cannot listen on {where}: permission denied for port {port}"
    if isinstance(exc, socket.gaierror):
        return f"Error: cannot listen on {where}: {host!r} does not resolve to an address"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"Error: cannot listen on {where}: {host!r} is not an address of this machine"
    return f"Error: cannot listen on {where}: {exc.strerror or exc}"


def describe_metrics_bind_error(host: str, port: int, exc: OSError) -> str:
    return describe_bind_error(host, port, exc).replace("cannot listen", "cannot serve metrics", 1)


def bind_listener(host: str, port: int, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A listening TCP socket on ``host:port`` (as gevent's servers bind one: SO_REUSEADDR).
    Raises OSError (socket.gaierror for a host name that does not resolve)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = gsocket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


# The flags that each name a port of their own (a door or a page): two of them on one port
# can never both listen.
PORT_FLAGS = ("port", "web_port", "metrics_port", "irc_port")


def port_clash(args) -> str | None:
    """The error line when two port flags name the same (non-zero) port, else None."""
    seen: dict[int, str] = {}
    for name in PORT_FLAGS:
        port = getattr(args, name, None)
        if not port:  # off, or 0 (a free port each)
            continue
        flag = "--" + name.replace("_", "-")
        if port in seen:
            return f"Error: {seen[port]} and {flag} are both {port}: each needs a port of its own"
        seen[port] = flag
    return None
