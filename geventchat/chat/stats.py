"""Counters of what the server has done, kept in the relay's hot path.

The hot path only adds to int attributes of one ``Stats`` object (no locks: one thread,
and an int add is all it costs). ``server.metrics`` turns them into Prometheus text at
scrape time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class Stats:
    """What the server has done since it started (counters) — updated in the hot path.

    A slotted class of plain ints (``slots=True``): an add is all the hot path pays."""

    connections_accepted: int = 0
    connections_refused: int = 0
    messages_received: int = 0
    lines_relayed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    sendq_drops: int = 0
    lines_too_long: int = 0
    throttle_waits: int = 0
    tls_handshake_failures: int = 0
    idle_timeouts: int = 0
    line_timeouts: int = 0
    registrations: int = 0
    logins: int = 0
    login_failures: int = 0
    login_lockouts: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def timed_out(self, reason: str) -> None:
        """For the sweeper: one more idle or line timeout."""
        if reason == "idle timeout":
            self.idle_timeouts += 1
        elif reason == "line timeout":
            self.line_timeouts += 1


# (attribute, metric name without the _total suffix, help text)
COUNTERS = (
    ("connections_accepted", "geventchat_connections_accepted", "Connections accepted and served (after any TLS handshake)."),
    ("connections_refused", "geventchat_connections_refused", "Connections refused: server full or too many from one address."),
    ("messages_received", "geventchat_messages_received", "Chat messages and /me actions received from clients."),
    (
        "lines_relayed",
        "geventchat_lines_relayed",
        "Lines queued for other clients: chat, actions, private messages and presence, one per recipient.",
    ),
    ("bytes_in", "geventchat_bytes_received", "Bytes received from clients (after TLS decryption)."),
    ("bytes_out", "geventchat_bytes_sent", "Bytes handed to the kernel for clients (before TLS encryption)."),
    ("sendq_drops", "geventchat_sendq_drops", "Clients dropped because their send queue passed --max-sendq."),
    ("lines_too_long", "geventchat_lines_too_long", "Lines refused as longer than --max-line."),
    ("throttle_waits", "geventchat_throttle_waits", "Times a client's reading was paused by --rate."),
    ("tls_handshake_failures", "geventchat_tls_handshake_failures", "TLS handshakes that failed or timed out."),
    ("idle_timeouts", "geventchat_idle_timeouts", "Clients dropped by --idle-timeout."),
    ("line_timeouts", "geventchat_line_timeouts", "Clients dropped by --line-timeout (a line left unfinished)."),
    ("registrations", "geventchat_registrations", "Nicknames registered (/register)."),
    ("logins", "geventchat_logins", "Successful logins to a registered nickname."),
    ("login_failures", "geventchat_login_failures", "Logins (and /password checks) refused for a wrong nickname or password."),
    ("login_lockouts", "geventchat_login_lockouts", "Times a nickname or an address was locked out after 5 failed logins."),
)

# Rooms are made by users; a per-room series is exported for the largest ones only.
