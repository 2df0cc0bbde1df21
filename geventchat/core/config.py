"""Server settings: what the command line chose, with the defaults from ``limits``."""

from __future__ import annotations

from dataclasses import dataclass

from geventchat.core import limits


@dataclass(frozen=True)
class Settings:
    max_line: int = limits.MAX_LINE
    max_sendq: int = limits.MAX_SENDQ
    max_clients: int = limits.MAX_CLIENTS
    rate: float = 0.0  # lines per second per connection; 0 = no throttle
    burst: int = 0  # lines a connection may send at once before the rate applies
    presence: bool = True
    log_messages: bool = True
    shutdown_timeout: float = limits.SHUTDOWN_TIMEOUT
    max_per_ip: int = limits.MAX_PER_IP
    idle_timeout: float = limits.IDLE_TIMEOUT  # seconds; 0 = off
    line_timeout: float = limits.LINE_TIMEOUT  # seconds; 0 = off
    busy_turn: float = limits.BUSY_TURN  # seconds (--turn-ms); 0 = the loop turns freely
    # The server's other doors, named to a client that knocks at the wrong one (wrongdoor.py);
    # the real ports, known once they are bound. None: not open.
    web_port: int | None = None
    web_scheme: str = "http"
    irc_port: int | None = None
