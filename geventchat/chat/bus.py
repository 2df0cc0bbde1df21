"""The link between server processes: Redis pub/sub for lines, Redis keys for shared state.

One ``RedisBus`` per process. It knows Redis and the wire format of the bus; what the
lines mean is the business of its *sink* (``cluster.ClusterHub``), which it calls back:

- ``sink.bus_records(records)``: ``(kind, key, data)`` records from another process
  (``ROOM``: a line for every local member of room ``key``; ``PRIVATE``: a line for the
  local member whose folded nickname is ``key``);
- ``sink.bus_link(up)``: the link went down, or came (back) up;
- ``sink.bus_snapshot()``: ``{folded nick: (nick, room name)}`` of the local members,
  announced to Redis whenever the link is (re)established;
- ``sink.bus_reaped(members)``: ``[(nick, room name)]`` of a dead process, once, on the one
  survivor that cleaned it up.

Channels: every process publishes to, and subscribes to, ONE channel per cluster
(``PREFIX:bus``) and filters by room locally. A published message is a batch:
``ORIGIN \\x1e RECORD \\x1e RECORD ...`` with ``RECORD = KIND KEY \\x1f LINE``. Lines are
sanitised text (no C0 controls) and keys are nicknames or room names, so the separators
never occur inside them.

Order: one publisher greenlet drains one queue in order, one batch (one pipelined round
trip) at a time, and Redis hands a subscriber messages in the order it executed the
PUBLISHes; so each sender's lines reach every process in the order sent.

State in Redis (keys under ``PREFIX:``):

- ``procs``: set of process ids; ``alive:ID``: heartbeat key, expires after ``expiry`` s;
- ``members:ID``: hash folded nick -> ``nick \\t room`` of that process's members;
- ``nick:FOLD``: ``ID nick``, the cluster-wide claim on a nickname (``SET NX``).

A survivor finds a process in ``procs`` whose ``alive`` key expired and runs one Lua script
that removes it and its members and frees their nicknames, atomically: exactly one
process gets the list back and announces the quits.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable
from types import ModuleType
from typing import Any, Protocol

import gevent
import gevent.event

log = logging.getLogger("geventchat")

ROOM = "R"
PRIVATE = "P"

_REC = b"\x1e"  # between records (and after the origin)
_KEY = b"\x1f"  # between a record's kind+key and its line

# Bytes of records per PUBLISH; a bigger backlog goes out as several messages in the same
# pipelined round trip. Small enough to stay far below Redis's pub/sub output buffer limit.
MAX_PAYLOAD = 256 * 1024

# Bytes of received messages passed on before the subscriber lets the writers flush them
# (see _read_messages): as much as one full message.
YIELD_AFTER = MAX_PAYLOAD

# Heartbeat: the alive key expires after EXPIRY seconds; it is refreshed EXPIRY/3 apart.
# A killed process's users are shown as quit at most about EXPIRY * 4/3 later.
DEFAULT_EXPIRY = 10.0

# Reconnection backoff (seconds): from MIN, doubling, capped at MAX.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0

# Seconds one Redis call may take before the link is considered down.
CALL_TIMEOUT = 5.0

LINK_DOWN = "Link to the other servers is down: until it is back, only users of this server see your messages"
LINK_UP = "Link to the other servers is back"

_REAP_LUA = """
local prefix, me = ARGV[1], ARGV[2]
local out = {}
for _, p in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if p ~= me and redis.call('EXISTS', prefix .. 'alive:' .. p) == 0 then
    redis.call('SREM', KEYS[1], p)
    local hkey = prefix .. 'members:' .. p
    local m = redis.call('HGETALL', hkey)
    redis.call('DEL', hkey)
    for i = 1, #m, 2 do
      local nkey = prefix .. 'nick:' .. m[i]
      local v = redis.call('GET', nkey)
      if v and string.sub(v, 1, #p + 1) == p .. ' ' then redis.call('DEL', nkey) end
      table.insert(out, m[i + 1])
    end
  end
end
return out
"""

_RELEASE_MINE_LUA = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then return redis.call('DEL', KEYS[1]) end
return 0
"""

_CLAIM_LUA = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[2] + 1) ~= ARGV[2] .. ' ' then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class BusError(Exception):
    """Redis cannot be used (not installed, unreachable); the text says why, in one line."""


class Sink(Protocol):
    def bus_records(self, records: list[tuple[str, str, bytes]]) -> None: ...

    def bus_link(self, up: bool) -> None: ...

    def bus_snapshot(self) -> dict[str, tuple[str, str]]: ...

    def bus_reaped(self, members: list[tuple[str, str]]) -> None: ...

    def bus_rejoined(self) -> None: ...

    def bus_clash(self, folded: list[str]) -> None: ...


def _import_redis() -> ModuleType:
    try:
        import redis
        import redis.backoff
        import redis.retry
    except ImportError:
        raise BusError("--redis-url needs the redis package: pip install redis") from None
    return redis


def new_process_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class RedisBus:
    def __init__(
        self, url: str, *, expiry: float = DEFAULT_EXPIRY, prefix: str = "geventchat", process_id: str | None = None
    ) -> None:
        redis = _import_redis()
        self._errors = (redis.RedisError, OSError)
        self.url = url
        self.id = process_id or new_process_id()
        self.expiry = expiry
        self.interval = expiry / 3
        self.prefix = prefix + ":"
        self.channel = self.prefix + "bus"
        self._procs_key = self.prefix + "procs"
        self._alive_key = f"{self.prefix}alive:{self.id}"
        self._members_key = f"{self.prefix}members:{self.id}"
        self._origin = self.id.encode()
        try:
            # No hidden retries: a failure reaches us, and the supervisor reconnects (and
            # re-announces) itself. Greenlets block on the pool, never open unbounded sockets.
            pool = redis.BlockingConnectionPool.from_url(
                url,
                max_connections=16,
                timeout=CALL_TIMEOUT,
                socket_timeout=CALL_TIMEOUT,
                socket_connect_timeout=CALL_TIMEOUT,
                socket_keepalive=True,
                retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
            )
        except ValueError as exc:
            raise BusError(f"bad --redis-url {url!r}: {exc}") from None
        self.redis = redis.Redis(connection_pool=pool)
        self._reap = self.redis.register_script(_REAP_LUA)
        self._claim = self.redis.register_script(_CLAIM_LUA)  # free, or a leftover of ours
        self._release = self.redis.register_script(_RELEASE_LUA)  # exactly this claim
        self._release_mine = self.redis.register_script(_RELEASE_MINE_LUA)  # any of ours
        self.sink: Sink | None = None
        self.up = False
        self._queue: list[bytes] = []  # encoded records waiting for the publisher
        self._wake = gevent.event.Event()
        self._broken = gevent.event.Event()  # the live link failed somewhere
        self._became_up = gevent.event.Event()
        self._up_since = 0.0
        self._registered = False
        self._clashes: list[str] = []
        self._closing = False
        self._publishing = False  # a batch is on its way to Redis
        self._greenlets: list[gevent.Greenlet[..., None]] = []
        self.claims: dict[str, str] = {}  # folded nick -> the value of our claim on it
        self._serial = 0
        # Open (set) unless the subscriber is behind: then the readers of this process's
        # clients hold before reading more (see _read_messages).
        self.gate = gevent.event.Event()
        self.gate.set()
        self.held = 0  # times the gate closed (the subscriber fell behind)
        self.dropped = 0  # records not published because the link was down
        self.published_batches = 0
        self.published_records = 0

    # ------------------------------------------------------------------- lifecycle

    def check(self) -> None:
        """Reach Redis once, now; raises BusError with the reason if it cannot."""
        try:
            self.redis.ping()
        except self._errors as exc:
            raise BusError(f"cannot reach Redis at {self.url}: {exc}") from None

    def start(self, sink: Sink) -> None:
        self.sink = sink
        self._greenlets = [gevent.spawn(self._supervise), gevent.spawn(self._publisher)]

    def wait_up(self, timeout: float) -> bool:
        return self._became_up.wait(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Publish what is queued, leave the cluster (free our names), stop."""
        self._closing = True
        self.gate.set()
        if self.up:
            with gevent.Timeout(timeout, False):  # type: ignore[arg-type]  # False: end quietly (gevent's stubs miss it)
                while self._queue or self._publishing:
                    self._wake.set()
                    gevent.sleep(0.01)
                try:
                    pipe = self.redis.pipeline(transaction=False)
                    for key, value in self.claims.items():
                        self._release(keys=[self._nick_key(key)], args=[value], client=pipe)
                    pipe.delete(self._members_key, self._alive_key)
                    pipe.srem(self._procs_key, self.id)
                    pipe.execute()
                except self._errors:
                    pass
        gevent.killall(self._greenlets, block=True, timeout=1)
        self.redis.connection_pool.disconnect()

    # ------------------------------------------------------------------ publishing

    def publish(self, kind: str, key: str, data: bytes) -> None:
        """Queue one line for the other processes; never blocks."""
        if not self.up:
            self.dropped += 1
            return
        if b"\x1e" in data or b"\x1f" in data:  # never in sanitised text; be safe anyway
            data = data.replace(b"\x1e", b"").replace(b"\x1f", b"")
        self._queue.append(f"{kind}{key}\x1f".encode() + data)
        if not self._wake.is_set():
            self._wake.set()

    def _publisher(self) -> None:
        wake = self._wake
        while True:
            wake.wait()
            wake.clear()
            while self._queue:
                records, self._queue = self._queue, []
                if not self.up:
                    self.dropped += len(records)
                    continue
                pipe = self.redis.pipeline(transaction=False)
                for payload in _payloads(self._origin, records):
                    pipe.publish(self.channel, payload)
                self._publishing = True
                try:
                    pipe.execute()
                except Exception as exc:  # redis-py's errors, or its state after a kill
                    if self._closing:
                        return
                    self.dropped += len(records)
                    self._fail(exc)
                    continue
                finally:
                    self._publishing = False
                self.published_batches += 1
                self.published_records += len(records)

    # ------------------------------------------------------------------- receiving

    def _read(self, pubsub: Any) -> None:
        try:
            self._read_messages(pubsub)
        except Exception as exc:  # the link failed (or was closed under the read)
            if not self._closing:
                if not isinstance(exc, self._errors):
                    log.error("Redis subscriber failed", exc_info=exc)
                self._fail(exc)

    def _read_messages(self, pubsub: Any) -> None:
        own = self._origin + _REC
        sink = self.sink
        assert sink is not None, "start() names the sink before the subscriber runs"
        since_yield = 0  # payload bytes handed to the sink since the flushes last ran
        gate = self.gate
        connection = pubsub.connection
        while True:
            if not gate.is_set() and not connection.can_read(timeout=0):
                gate.set()  # caught up: nothing more is waiting
            message = pubsub.parse_response(block=True)
            if message is None or message[0] != b"message":
                continue
            payload = message[2]
            if payload.startswith(own):
                continue  # our own batch, back from Redis
            decoded = []
            for record in payload.split(_REC)[1:]:
                head, _, data = record.partition(_KEY)
                head = head.decode()
                decoded.append((head[0], head[1:], data))
            sink.bus_records(decoded)
            # The flushes these lines queued run when the read below waits for Redis; with
            # a backlog it never waits, so let them run every YIELD_AFTER bytes (or the
            # backlog would pile up in the outboxes, past --max-sendq). Not after every
            # message: each flush round is a send per recipient, and under load many small
            # messages come in together.
            #
            # Redis holds what a subscriber has not read yet, and past its pub/sub output
            # buffer limit (32 MB by default) it closes the subscription: every line then on
            # its way is lost. So when more is already waiting here (the process cannot keep
            # up: a flood, a busy CPU), the gate closes and this process's clients are read
            # no further until the subscriber has caught up (their TCP windows fill, and the
            # flood slows down at its source), for GATE_HOLD_MAX seconds at most at a time.
            since_yield += len(payload)
            if since_yield >= YIELD_AFTER:
                since_yield = 0
                if gate.is_set() and connection.can_read(timeout=0):
                    gate.clear()
                    self.held += 1
                gevent.sleep(0)

    # ------------------------------------------------------------ link supervision

    def _fail(self, exc: BaseException) -> None:
        if self.up and not self._broken.is_set():
            log.warning("Redis link lost: %s", exc)
        self._broken.set()
        self.gate.set()  # nothing to catch up with on a dead link

    def _set_up(self, up: bool) -> None:
        if up == self.up:
            return
        self.up = up
        if up:
            self._up_since = time.monotonic()
            self._became_up.set()
            log.warning("Redis link up: %s as %s", self.url, self.id)
        else:
            self._queue.clear()
            self.gate.set()
        if self.sink is not None:
            self.sink.bus_link(up)

    def _supervise(self) -> None:
        backoff = BACKOFF_MIN
        first = True
        while not self._closing:
            pubsub = None
            reader = None
            self._broken.clear()
            try:
                pubsub = self.redis.pubsub()
                pubsub.subscribe(self.channel)
                reply = pubsub.parse_response(block=True)  # the subscription's confirmation
                assert reply[0] == b"subscribe", reply
                self._announce()
                reader = gevent.spawn(self._read, pubsub)
                self._set_up(True)
                self._settle_clashes()
                first = False
                backoff = BACKOFF_MIN
                while not self._broken.wait(self.interval):
                    self._heartbeat()
                    self._reap_dead()
            except Exception as exc:  # redis-py's errors, or its state after a kill
                if self._closing:
                    return
                if not isinstance(exc, self._errors):
                    log.error("Redis link failed", exc_info=exc)
                elif first or self.up:
                    log.warning("Redis link down: %s", exc)
                first = False
            finally:
                if reader is not None:
                    reader.kill(block=False)
                if pubsub is not None:
                    try:
                        pubsub.reset()
                    except Exception:
                        pass
            self._set_up(False)
            if self._closing:
                return
            gevent.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _announce(self) -> None:
        """(Re)register this process and its members; claim their nicknames again."""
        snapshot = self.sink.bus_snapshot() if self.sink else {}
        previous = self.redis.hkeys(self._members_key)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self._alive_key, "1", px=int(self.expiry * 1000))
        pipe.sadd(self._procs_key, self.id)
        pipe.delete(self._members_key)
        if snapshot:
            pipe.hset(self._members_key, mapping={key: f"{nick}\t{room}" for key, (nick, room) in snapshot.items()})
        claims = list(self.claims.items())
        for key, value in claims:
            pipe.set(self._nick_key(key), value, nx=True)
        for key in previous:
            key = key.decode()
            if key not in self.claims:  # released while the link was down
                self._release_mine(keys=[self._nick_key(key)], args=[self.id], client=pipe)
        results = pipe.execute()
        fixes = self.redis.pipeline(transaction=False)
        clashes = []
        for (key, value), ok in zip(claims, results[3 + bool(snapshot) :]):
            if not ok:
                if self.owner(key) == self.id:
                    fixes.set(self._nick_key(key), value)  # an older claim of ours
                else:  # taken elsewhere while the link was down: ours must change
                    log.warning("Nickname %s is also in use on another server", value.split(" ")[1])
                    self.claims.pop(key, None)
                    clashes.append(key)
        fixes.execute()
        self._clashes = clashes  # handled once the link is up (renaming claims names)
        self._registered = True

    def _settle_clashes(self) -> None:
        clashes, self._clashes = self._clashes, []
        if clashes and self.sink is not None:
            self.sink.bus_clash(clashes)

    def _heartbeat(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self._alive_key, "1", px=int(self.expiry * 1000))
        pipe.sadd(self._procs_key, self.id)
        _, added = pipe.execute()
        if added:
            # We had been taken for dead (or Redis lost its data): register everything again.
            log.warning("Redis had forgotten this server; announcing its users again")
            self._announce()
            self._settle_clashes()
            assert self.sink is not None, "started"
            self.sink.bus_rejoined()

    def _reap_dead(self) -> None:
        # Right after (re)connecting, the others may not have refreshed their heartbeat yet.
        if time.monotonic() - self._up_since < self.expiry:
            return
        found = self._reap(keys=[self._procs_key], args=[self.prefix, self.id])
        if found:
            members = []
            for value in found:
                nick, _, room = value.decode().partition("\t")
                members.append((nick, room))
            log.info("Cleaned up %d user(s) of a server that stopped answering", len(members))
            assert self.sink is not None, "started"
            self.sink.bus_reaped(members)

    # ------------------------------------------------------------- shared state

    def _nick_key(self, folded: str) -> str:
        return f"{self.prefix}nick:{folded}"

    def _claim_value(self, nick: str) -> str:
        self._serial += 1
        return f"{self.id} {nick} {self._serial}"

    def claim(self, folded: str, nick: str, room: str) -> bool:
        """Claim a nickname cluster-wide and list it as ours, in ``room``; True if it is
        ours now (always, with the link down). One round trip.

        The caller makes sure nobody in this process holds or is claiming the name.
        """
        value = self._claim_value(nick)
        if self.up:
            try:
                ok = self._claim(
                    keys=[self._nick_key(folded), self._members_key], args=[value, self.id, folded, f"{nick}\t{room}"]
                )
            except self._errors as exc:
                self._fail(exc)
            else:
                if not ok:
                    return False
        self.claims[folded] = value
        return True

    def update(
        self,
        *,
        members: dict[str, tuple[str, str]] | None = None,
        gone: Iterable[str] = (),
        release: Iterable[str] = (),
        respell: dict[str, str] | None = None,
    ) -> None:
        """Change this process's entries now, in one round trip, before the caller tells
        anyone: ``members`` folded nick -> (nick, room) listed, ``gone`` unlisted,
        ``release`` nicknames given up, ``respell`` folded nick -> the same name with other
        capitals. With the link down only our own records change (see ``_announce``)."""
        ops: list[tuple[Any, ...]] = []
        for folded in release:
            value = self.claims.pop(folded, None)
            if value is not None:
                ops.append((self._release, self._nick_key(folded), value))
        for folded, nick in (respell or {}).items():
            value = self.claims[folded] = self._claim_value(nick)
            ops.append(("SET", self._nick_key(folded), value))
        gone = list(gone)
        if gone:
            ops.append(("HDEL", self._members_key, *gone))
        if members:
            ops.append(
                ("HSET", self._members_key, *[x for key, (nick, room) in members.items() for x in (key, f"{nick}\t{room}")])
            )
        if not ops or not self.up:
            return
        pipe = self.redis.pipeline(transaction=False)
        for op in ops:
            if isinstance(op[0], str):
                pipe.execute_command(*op)
            else:  # a Lua script: ``script(keys, args, client)`` loads it if needed
                op[0](keys=[op[1]], args=list(op[2:]), client=pipe)
        try:
            pipe.execute()
        except self._errors as exc:
            self._fail(exc)

    def owner(self, folded: str) -> str | None:
        value = self.redis.get(self._nick_key(folded))
        return value.decode().partition(" ")[0] if value else None

    def lookup(self, folded: str) -> tuple[str, str] | None:
        """``(process id, nick)`` of a nickname anywhere in the cluster, or None."""
        if not self.up:
            return None
        try:
            value = self.redis.get(self._nick_key(folded))
        except self._errors as exc:
            self._fail(exc)
            return None
        if not value:
            return None
        owner, nick = value.decode().split(" ")[:2]
        return owner, nick

    def remote_members(self) -> list[tuple[str, str]]:
        """``(nick, room name)`` of every member of every other live process."""
        if not self.up:
            return []
        try:
            procs = [p.decode() for p in self.redis.smembers(self._procs_key)]
            procs = sorted(p for p in procs if p != self.id)
            if not procs:
                return []
            pipe = self.redis.pipeline(transaction=False)
            for proc in procs:
                pipe.hvals(f"{self.prefix}members:{proc}")
            found = pipe.execute()
        except self._errors as exc:
            self._fail(exc)
            return []
        members = []
        for values in found:
            for value in sorted(values):
                nick, _, room = value.decode().partition("\t")
                members.append((nick, room))
        return members


def _payloads(origin: bytes, records: list[bytes]) -> Iterable[bytes]:
    """The records as few messages as possible, each at most about MAX_PAYLOAD bytes."""
    batch = [origin]
    size = 0
    for record in records:
        if size + len(record) > MAX_PAYLOAD and len(batch) > 1:
            yield _REC.join(batch)
            batch = [origin]
            size = 0
        batch.append(record)
        size += len(record) + 1
    if len(batch) > 1:
        yield _REC.join(batch)
