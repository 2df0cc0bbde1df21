"""The rules of accounts (registered nicknames), sans-IO: no store, no hashing, no clock
of its own.

* ``password_problem``: what is wrong with a password (8 to 128 characters, no spaces).
* ``registrable``: port names cannot be registered: all-digit names (a new connection's
  default) and their variants ``PORT-N`` (what a connection gets when its port name is taken).
* ``is_secret_line``: the lines clients must keep out of their input history.
* ``LoginLimiter``: after 5 failed logins within 60 s for one nickname (from any address),
  or from one address (for any nickname), ``/login`` is refused until 60 s after the fifth
  failure. The clock is passed in, so it is tested without waiting.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections import deque
from collections.abc import Callable

MIN_PASSWORD = 8
MAX_PASSWORD = 128

# Commands whose lines carry a password: never kept in a client's input history.
SECRET_COMMANDS = frozenset({"register", "login", "password"})

MAX_FAILURES = 5  # failed logins ...
FAILURE_WINDOW = 60.0  # ... within this many seconds ...
LOCKOUT = 60.0  # ... refuse further logins until this long after the last of them

WRONG_LOGIN = "wrong nickname or password"
NO_STORE = "accounts need a server started with --db or --redis-url"
NOT_ENCRYPTED = "Warning: this connection is not encrypted"


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be used, or None. The text never repeats the password."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        return f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"
    if any(ch.isspace() for ch in password):
        return "a password cannot contain spaces"
    return None


# A port (digits) and, when that name was taken, the variant the server made of it (-N).
_PORT_NAME = re.compile(r"[0-9]+(?:-[0-9]+)?")


def registrable(nick: str) -> bool:
    """Not a port name: the server hands those out by itself (a new connection, a member
    renamed by a login from elsewhere), so a registered one would be given to a stranger."""
    return _PORT_NAME.fullmatch(nick) is None


def is_secret_line(line: str) -> bool:
    """True for a ``/register``, ``/login`` or ``/password`` line (any capitals, leading
    blanks allowed): a client keeps it out of its input history."""
    text = line.lstrip()
    if text[:1] != "/" or text[:2] == "//":
        return False
    return text[1:].split(None, 1)[0].lower() in SECRET_COMMANDS if len(text) > 1 else False


_SECRET_PART_RE = re.compile(r"\s*/(?:login\s+\S+\s|register\s|password\s)", re.IGNORECASE)


def secret_start(line: str) -> int | None:
    """Where the password begins in a line being typed (after ``/login NICK ``,
    ``/register `` or ``/password ``), for a client to mask the rest; None if nowhere."""
    match = _SECRET_PART_RE.match(line)
    return match.end() if match else None


def address_key(host: str) -> str:
    """The "address" the login limiter counts for a peer: its IPv4 address, or its IPv6
    /64 (one site's network: anyone given an IPv6 address usually has a whole /64)."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def lockout_message(seconds: int) -> str:
    return f"too many failed logins; try again in {seconds} s"


class LoginLimiter:
    """Counts failed logins per nickname and per address; refuses while either is locked.

    Keys are opaque strings (a folded nickname, an IP address); the two kinds are kept
    apart. Memory: at most ``max_failures`` times per key, and keys whose failures have all
    aged out are forgotten (``prune``, run now and then by ``record_failure``).
    """

    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW,
        lockout: float = LOCKOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._locked_until: dict[tuple[str, str], float] = {}
        self._records_since_prune = 0

    def locked_for(self, nick_key: str, address: str) -> int:
        """Whole seconds (at least 1) until a login for ``nick_key`` from ``address`` may be
        tried again; 0 when it may be tried now."""
        now = self.clock()
        until = max(self._locked_until.get(("n", nick_key), 0.0), self._locked_until.get(("a", address), 0.0))
        if until <= now:
            return 0
        return max(1, math.ceil(until - now))

    def record_failure(self, nick_key: str, address: str) -> bool:
        """One more failed login; True if it locked the nickname or the address."""
        now = self.clock()
        locked = False
        for key in (("n", nick_key), ("a", address)):
            times = self._failures.get(key)
            if times is None:
                times = self._failures[key] = deque(maxlen=self.max_failures)
            times.append(now)
            if len(times) == self.max_failures and now - times[0] <= self.window:
                self._locked_until[key] = now + self.lockout
                times.clear()  # counting starts again once the lockout is over
                locked = True
        self._records_since_prune += 1
        if self._records_since_prune >= 1000:
            self.prune()
        return locked

    def prune(self) -> None:
        """Forget keys with nothing left to count or to refuse."""
        now = self.clock()
        self._records_since_prune = 0
        self._failures = {key: times for key, times in self._failures.items() if times and now - times[-1] <= self.window}
        self._locked_until = {key: until for key, until in self._locked_until.items() if until > now}

    def __len__(self) -> int:
        return len(self._failures) + len(self._locked_until)
