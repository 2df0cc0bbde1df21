"""Accounts: registered nicknames, what the doors call (line, web, IRC).

``Accounts`` is the service: ``register``, ``login``, ``logout``, ``change_password`` for a
member of the hub, and ``verify`` alone (the IRC door's SASL PLAIN and PASS, before its
user is a member). A refusal raises ``HubError`` with the text of the contract; the
password is never part of any text, log line or exception.

Hashing: argon2id through argon2-cffi (OWASP's first choice; the parameters are part of
the stored hash, so they can be raised later: a login rehashes a hash made with others).
A hash costs tens of milliseconds of CPU by design; it runs in a small pool of real
threads (argon2-cffi releases the GIL), so the event loop keeps relaying everyone else's
lines meanwhile. Only the reader of the member who asked waits.

Where accounts live is a store (``stores.accounts``: SQLite with ``--db``, Redis with
``--redis-url``); this module knows it only as ``AccountStore``.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from collections.abc import Callable
from typing import Protocol, TypeVar

import argon2
from gevent.threadpool import ThreadPool

from geventchat.chat.hub import Hub, HubError, Member
from geventchat.chat.stats import Stats
from geventchat.core import accountrules, protocol
from geventchat.core.accountrules import LoginLimiter

log = logging.getLogger("geventchat")

# OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane (about 30 ms of one core here).
TIME_COST = 2
MEMORY_COST = 19 * 1024  # KiB
PARALLELISM = 1
# Registered nicknames remembered for when the store is away (see Accounts.is_registered).
MAX_KNOWN = 100_000
# Threads that hash at once: each holds MEMORY_COST while it works.
HASH_THREADS = 2


class AccountStoreError(Exception):
    """The store cannot be used right now (Redis down, disk full); the text says so
    without any account data."""


class AccountStore(Protocol):
    """Where registered nicknames and their password hashes live (never a password)."""

    def get_hash(self, key: str) -> str | None:
        """The stored hash of folded nickname ``key``; None when it is not registered."""

    def create(self, key: str, nick: str, password_hash: str) -> bool:
        """Register ``nick`` (folded: ``key``); False if it is registered already."""

    def set_hash(self, key: str, password_hash: str) -> None:
        """Replace the hash of a registered nickname."""

    def close(self) -> None: ...


_T = TypeVar("_T")


def _return_hash_memory_at_once() -> None:
    """Each hash allocates MEMORY_COST (19 MiB) and frees it. glibc's malloc serves a block
    that big with mmap, but the first free of one raises its mmap threshold (it adapts),
    and from then on such blocks come from the hashing threads' arenas and stay resident:
    a few registrations left the server 40 MiB bigger for good. A fixed threshold (setting
    it turns the adapting off) keeps every big block an mmap, unmapped when freed."""
    if platform.libc_ver()[0] != "glibc":
        return
    try:
        ctypes.CDLL(None).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB
    except (OSError, AttributeError):
        pass


class PasswordHasher:
    """argon2id hashing and the library's (constant-time) verify, off the event loop."""

    def __init__(self, *, time_cost: int = TIME_COST, memory_cost: int = MEMORY_COST, parallelism: int = PARALLELISM) -> None:
        self._argon2 = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
        self._pool: ThreadPool | None = None
        # A hash to verify against when the nickname is unknown: the reply then takes as
        # long as for a wrong password, and says the same.
        self._decoy: str | None = None

    def _run(self, func: Callable[..., _T], *args: str) -> _T:
        if self._pool is None:
            _return_hash_memory_at_once()
            self._pool = ThreadPool(HASH_THREADS)
        return self._pool.apply(func, args)

    def hash(self, password: str) -> str:
        return self._run(self._argon2.hash, password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True if ``password`` matches; False (after the same work) for no hash at all."""
        if password_hash is None:
            if self._decoy is None:
                self._decoy = self.hash("decoy password, never anyone's")
            password_hash = self._decoy
            self._run(self._check, password_hash, password)
            return False
        return self._run(self._check, password_hash, password)

    def _check(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            log.warning("An account's stored hash is not an argon2 hash; its login fails")
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._argon2.check_needs_rehash(password_hash)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.kill()
            self._pool = None


def _account_of(member: Member) -> str | None:
    return getattr(member, "account", None)


def _warnings(member: Member) -> None:
    """Over plain TCP (or plain HTTP) from an address that is not loopback."""
    if getattr(member, "exposed", False):
        member.deliver(protocol.notice(accountrules.NOT_ENCRYPTED))


class Accounts:
    """The account actions, for every door; one per server, held by the hub."""

    def __init__(
        self,
        store: AccountStore,
        stats: Stats,
        *,
        hasher: PasswordHasher | None = None,
        limiter: LoginLimiter | None = None,
    ) -> None:
        self.store = store
        self.stats = stats
        self.hasher = hasher or PasswordHasher()
        self.limiter = limiter or LoginLimiter()
        # Nicknames this process has seen registered: still protected while the store
        # cannot be asked (Redis away), when /nick is checked here only, as the cluster's
        # names then are.
        self._known: set[str] = set()

    def close(self) -> None:
        self.hasher.close()
        self.store.close()

    # ------------------------------------------------------------------ lookups

    def _get_hash(self, key: str) -> str | None:
        try:
            return self.store.get_hash(key)
        except AccountStoreError as exc:
            raise HubError(str(exc))

    def is_registered(self, nick: str) -> bool:
        """Whether ``nick`` is registered; with the store away, whether it was when last
        seen (a rename must not wait for the store to come back)."""
        key = protocol.fold(nick)
        try:
            found = self.store.get_hash(key) is not None
        except AccountStoreError:
            return key in self._known
        if found and len(self._known) < MAX_KNOWN:
            self._known.add(key)
        return found

    # ------------------------------------------------------------------ actions

    def register(self, hub: Hub, member: Member, password: str) -> None:
        """Register the member's current nickname with ``password`` and log it in."""
        nick = member.nick
        key = protocol.fold(nick)
        if not accountrules.registrable(nick):
            raise HubError(f"nickname {nick} cannot be registered (a port name); choose a name with /nick NAME first")
        problem = accountrules.password_problem(password)
        if problem:
            raise HubError(problem)
        if self._get_hash(key) is not None:
            raise HubError(f"nickname {nick} is already registered")
        password_hash = self.hasher.hash(password)
        if protocol.fold(member.nick) != key:  # renamed (taken over) while hashing
            raise HubError(f"you are no longer {nick}; nothing was registered")
        try:
            created = self.store.create(key, nick, password_hash)
        except AccountStoreError as exc:
            raise HubError(str(exc))
        if not created:
            raise HubError(f"nickname {nick} is already registered")
        member.account = key  # type: ignore[attr-defined]
        if len(self._known) < MAX_KNOWN:
            self._known.add(key)
        self.stats.registrations += 1
        log.info("Nickname %s registered", nick)
        member.deliver(protocol.notice(f"{nick} is now registered and you are logged in"))
        _warnings(member)

    def verify(self, nick: str, password: str, address: str) -> str:
        """Check a login without touching any member: the folded nickname when
        ``password`` is right; else ``HubError`` (wrong, unknown, or locked out).
        ``address``: the peer's IP address (an IPv6 one counts as its /64)."""
        key = protocol.fold(nick)
        address = accountrules.address_key(address)
        wait = self.limiter.locked_for(key, address)
        if wait:
            raise HubError(accountrules.lockout_message(wait))
        password_hash = self._get_hash(key) if protocol.valid_nick(nick) else None
        if not self.hasher.verify(password_hash, password):
            self.stats.login_failures += 1
            if self.limiter.record_failure(key, address):
                self.stats.login_lockouts += 1
                log.info("Logins locked for 60 s after %d failures (a nickname or an address)", accountrules.MAX_FAILURES)
            raise HubError(accountrules.WRONG_LOGIN)
        if password_hash is not None and self.hasher.needs_rehash(password_hash):
            try:
                self.store.set_hash(key, self.hasher.hash(password))
            except AccountStoreError:
                pass  # the old hash still works; next login tries again
        if len(self._known) < MAX_KNOWN:
            self._known.add(key)
        return key

    def login(self, hub: Hub, member: Member, nick: str, password: str, address: str) -> None:
        """``/login NICK PASSWORD``: the member becomes NICK, logged in; whoever held NICK
        is renamed to a free name of its port and told why."""
        key = self.verify(nick, password, address)
        previous = _account_of(member)
        member.account = key  # type: ignore[attr-defined]  # lets the rename below take the name
        try:
            hub.take_nick(member, nick)
        except HubError:
            member.account = previous  # type: ignore[attr-defined]
            raise
        self.stats.logins += 1
        log.info("%s logged in", member.nick)
        member.deliver(protocol.notice(f"You are now logged in as {member.nick}"))
        _warnings(member)

    def logout(self, member: Member) -> None:
        if _account_of(member) is None:
            raise HubError("you are not logged in")
        member.account = None  # type: ignore[attr-defined]
        member.deliver(protocol.notice("You are logged out"))

    def change_password(self, member: Member, old: str, new: str, address: str) -> None:
        """``/password OLD NEW`` for the account the member is logged in to; a wrong OLD
        counts as a failed login (it is a guess all the same)."""
        key = _account_of(member)
        if key is None:
            raise HubError("you are not logged in; use /login NICK PASSWORD first")
        problem = accountrules.password_problem(new)
        if problem:
            raise HubError(problem)
        self.verify(key, old, address)
        try:
            self.store.set_hash(key, self.hasher.hash(new))
        except AccountStoreError as exc:
            raise HubError(str(exc))
        member.deliver(protocol.notice("Password changed"))
        _warnings(member)
