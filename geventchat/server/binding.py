"""What the listening parts of the server share: the backlog, the bind error lines, and
the lifecycle logger whose lines scripts wait for."""

from __future__ import annotations

import errno
import logging
import socket

from geventchat.doors.connection import describe_peer

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
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return f"Error: cannot listen on {where}: {host!r} is not an address of this machine"
    return f"Error: cannot listen on {where}: {exc.strerror or exc}"


def describe_metrics_bind_error(host: str, port: int, exc: OSError) -> str:
    return describe_bind_error(host, port, exc).replace("cannot listen", "cannot serve metrics", 1)
