"""Several server processes, one chat: the hub side of the Redis bus, and ``--workers``.

``ClusterHub`` is a ``Hub`` whose room lines (chat, actions, presence) also go to the
other processes through ``bus.RedisBus``, and which receives theirs: a line from another
process reaches local members through ``Hub.deliver_local``, like any other. Nicknames
are claimed cluster-wide before they are used; ``/who``, ``/rooms`` and ``/stats`` add the
members of the other processes (read from Redis when asked); ``/msg`` finds a nickname
wherever it is.

With the link down, everything local goes on as before (names are then only checked
here); the bus re-announces this process's members when the link is back.
"""

from __future__ import annotations

import logging
import time

from . import limits, protocol
from .bus import LINK_DOWN, LINK_UP, PRIVATE, ROOM, BusError, RedisBus
from .hub import Hub, HubError, Member, Room

log = logging.getLogger("geventchat")

# Nickname variants tried for a new connection before giving up (port-N, N = 2, 3, ...).
MAX_NICK_TRIES = 1000

# Seconds before a --workers worker that died is started again: RESTART_MIN, doubling up to
# RESTART_MAX while it keeps dying within RESTART_MAX of its start.
RESTART_MIN = 0.5
RESTART_MAX = 10.0

# The reason the others see for the users of a server that stops cleanly.
STOPPING_REASON = "server shutting down"


class ClusterHub(Hub):
    def __init__(self, bus: RedisBus, *, presence: bool = True, log_messages: bool = True) -> None:
        super().__init__(presence=presence, log_messages=log_messages)
        self.bus = bus
        self._claiming: set[str] = set()  # folded nicknames being claimed in Redis right now
        self._stopping = False  # our members have been told the server is shutting down

    def start(self) -> None:
        self.bus.start(self)

    def close(self) -> None:
        self.bus.close()

    def begin_stop(self) -> None:
        # "*** Server shutting down" is the last thing our members hear: the other processes'
        # lines (such as the quits of a --workers sibling stopping at the same time) are no
        # longer handed to them. What they leave is still published.
        self._stopping = True

    # ------------------------------------------------------------------- outgoing

    def to_room(self, room: Room | None, data: bytes, exclude: Member | None = None) -> None:
        if room is None:
            return
        self.deliver_local(room, data, exclude)
        self.bus.publish(ROOM, room.key, data)

    def free_nick(self, wanted: str, room: str = limits.DEFAULT_ROOM) -> str:
        for n in range(1, MAX_NICK_TRIES + 1):
            candidate = wanted if n == 1 else f"{wanted[: limits.MAX_NICK - 1 - len(str(n))]}-{n}"
            key = protocol.fold(candidate)
            if key in self.members or key in self._claiming:
                continue
            self._claiming.add(key)
            try:
                ok = self.bus.claim(key, candidate, self._room_name(room))
            finally:
                self._claiming.discard(key)
            if ok:
                # No greenlet switch from here until Hub.add registers the name.
                return candidate
        raise HubError(f"no free nickname like {wanted}")

    def _room_name(self, name: str) -> str:
        """How ``name`` is spelt here: as the room's first member spelt it."""
        room = self.rooms.get(protocol.fold(name))
        return room.name if room is not None else name

    def add(self, member: Member, wanted_nick: str, room: str = limits.DEFAULT_ROOM) -> None:
        super().add(member, wanted_nick, room)
        if not self.bus.up:  # the others were told when the link went; a newcomer is now
            member.deliver(protocol.notice(LINK_DOWN))

    def remove(self, member: Member, reason: str = "", announce: bool = True) -> None:
        key = protocol.fold(member.nick)
        if self.members.get(key) is not member:
            return
        room = member.room
        # First Redis (one round trip), then the others are told: whoever sees the quit
        # can take the name at once.
        self.bus.update(gone=[key], release=[key])
        if self.members.get(key) is not member:
            return
        super().remove(member, reason, announce)
        if not announce and self.presence and room is not None:
            # The server is stopping: its own users are told so; the others see them go.
            self.bus.publish(ROOM, room.key, protocol.quit_line(member.nick, reason or STOPPING_REASON))

    def rename(self, member: Member, new: str) -> None:
        old = member.nick
        new_key, old_key = protocol.fold(new), protocol.fold(old)
        if new_key in self._claiming:
            raise HubError(f"nickname {new} is already taken")
        if not protocol.valid_nick(new) or new_key == old_key or new_key in self.members:
            if protocol.valid_nick(new) and new_key == old_key and new != old:
                self.bus.update(respell={new_key: new}, members={new_key: (new, member.room.name)})  # type: ignore[union-attr]
            super().rename(member, new)  # refusals, "already known as", a change of capitals
            return
        self._claiming.add(new_key)
        try:
            if not self.bus.claim(new_key, new, member.room.name):  # type: ignore[union-attr]
                raise HubError(f"nickname {new} is already taken")
            self.bus.update(gone=[old_key], release=[old_key])
            super().rename(member, new)
        finally:
            self._claiming.discard(new_key)

    def join(self, member: Member, name: str) -> None:
        old = member.room
        if protocol.valid_room(name) and (old is None or old.key != protocol.fold(name)):
            self.bus.update(members={protocol.fold(member.nick): (member.nick, self._room_name(name))})
        super().join(member, name)

    def private(self, member: Member, target_nick: str, text: str) -> None:
        key = protocol.fold(target_nick)
        if key not in self.members:
            found = self.bus.lookup(key)
            if found is not None and found[0] != self.bus.id:
                self.bus.publish(PRIVATE, key, protocol.private_line(member.nick, text))
                member.deliver(protocol.notice(f"To {found[1]}: {text}"))
                return
        super().private(member, target_nick, text)

    # ------------------------------------------------------------------- listings

    def room_counts(self) -> list[tuple[str, int]]:
        counts = {room.key: [room.name, len(room.members)] for room in self.rooms.values()}
        for _, room_name in self.bus.remote_members():
            entry = counts.setdefault(protocol.fold(room_name), [room_name, 0])
            entry[1] += 1
        return sorted(((name, count) for name, count in counts.values()), key=lambda rc: protocol.fold(rc[0]))

    def nicks_in(self, room: Room) -> list[str]:
        here = super().nicks_in(room)
        return here + [nick for nick, room_name in self.bus.remote_members() if protocol.fold(room_name) == room.key]

    # ------------------------------------------------------------ from the bus

    def bus_records(self, records: list[tuple[str, str, bytes]]) -> None:
        if self._stopping:
            return
        rooms, members, deliver_local = self.rooms, self.members, self.deliver_local
        for kind, key, data in records:
            if kind == ROOM:
                room = rooms.get(key)
                if room is not None:
                    deliver_local(room, data)
            elif kind == PRIVATE:
                target = members.get(key)
                if target is not None:
                    target.deliver(data)

    def bus_link(self, up: bool) -> None:
        if self.members and not self._stopping:
            self.broadcast(protocol.notice(LINK_UP if up else LINK_DOWN))

    def bus_snapshot(self) -> dict[str, tuple[str, str]]:
        return {key: (member.nick, member.room.name) for key, member in self.members.items() if member.room is not None}

    def bus_reaped(self, members: list[tuple[str, str]]) -> None:
        if not self.presence:
            return
        for nick, room_name in members:
            line = protocol.quit_line(nick)
            key = protocol.fold(room_name)
            if not self._stopping:  # the others are told even so: we alone got the list
                self.deliver_local(self.rooms.get(key), line)
            self.bus.publish(ROOM, key, line)


    def bus_rejoined(self) -> None:
        """We had been taken for dead (a stall longer than the expiry) and shown as quit
        elsewhere: show our members as back."""
        if not self.presence:
            return
        for member in list(self.members.values()):
            if member.room is not None:
                self.bus.publish(ROOM, member.room.key, protocol.joined(member.nick, member.room.name))

    def bus_clash(self, folded: list[str]) -> None:
        """Names taken on another process while the link was down: ours get a free variant."""
        for key in folded:
            member = self.members.get(key)
            if member is None or member.room is None:
                continue
            old = member.nick
            new = self.free_nick(old, member.room.name)  # claims it (old itself is skipped: ours)
            if self.members.get(key) is not member:
                continue  # left meanwhile (free_nick waited for Redis)
            del self.members[key]
            self.members[protocol.fold(new)] = member
            member.nick = new
            self.bus.update(gone=[key])
            member.deliver(protocol.notice(f"Your nickname {old} was taken on another server while the link was down: you are now known as {new}"))
            if self.presence:
                self.to_room(member.room, protocol.renamed(old, new), member)


def connect(url: str, settings, *, expiry: float | None = None, link_now: bool = True) -> ClusterHub:
    """A hub linked to the cluster behind ``url``; raises ``bus.BusError`` if Redis cannot
    be used now (not installed, bad URL, unreachable). With ``link_now`` False (a
    ``--workers`` worker started again while its cluster runs), only a bad URL raises: the
    hub serves its users at once and the link comes up, with backoff, when Redis answers."""
    from .bus import DEFAULT_EXPIRY

    link = RedisBus(url, expiry=expiry or DEFAULT_EXPIRY)
    if link_now:
        link.check()
    hub = ClusterHub(link, presence=settings.presence, log_messages=settings.log_messages)
    hub.start()
    if link_now and not link.wait_up(timeout=10):
        link.close(timeout=0)
        raise BusError(f"cannot join the cluster at {url}: the Redis link did not come up")
    return hub


def run_workers(args, serve) -> int:
    """``--workers N``: N server processes on one port (SO_REUSEPORT), one chat over Redis.

    The parent binds N listening sockets to the same address (so bind errors and the real
    port of ``--port 0`` are known before any worker starts), forks one worker per socket,
    says ``Server listening on HOST:PORT`` once every worker accepts, and restarts a worker
    that dies. SIGINT or SIGTERM stops them all; then ``Server stopped`` and exit 0.
    The parent keeps its copy of the sockets: a restarted worker serves the same one, and
    connections that arrive meanwhile wait in its queue.
    """
    import os
    import signal
    import sys

    import gevent.event
    import gevent.os

    from .server import describe_bind_error, describe_metrics_bind_error, describe_peer, lifecycle

    try:
        probe = RedisBus(args.redis_url)
        probe.check()
        probe.redis.connection_pool.disconnect()  # no connection shared with the workers
    except BusError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    try:
        sockets = _shared_sockets(args.host, args.port, args.workers)
    except OSError as exc:
        print(describe_bind_error(args.host, args.port, exc), file=sys.stderr)
        return 1
    port = sockets[0].getsockname()[1]
    web_sockets: list = []
    if args.web_port is not None:  # the browser port too: one socket per worker, shared
        try:
            web_sockets = _shared_sockets(args.host, args.web_port, args.workers)
        except OSError as exc:
            for sock in sockets:
                sock.close()
            print(describe_bind_error(args.host, args.web_port, exc), file=sys.stderr)
            return 1
    metrics = None  # --metrics-port: the parent's page, covering every worker
    if args.metrics_port is not None:
        from .workermetrics import WorkerMetrics

        try:
            metrics = WorkerMetrics(args.host, args.metrics_port, args.workers)
        except OSError as exc:
            for sock in sockets + web_sockets:
                sock.close()
            print(describe_metrics_bind_error(args.host, args.metrics_port, exc), file=sys.stderr)
            return 1
        lifecycle.info("Metrics at http://%s/metrics", describe_peer(metrics.address))

    stop_requested = gevent.event.Event()
    workers: dict[int, int] = {}  # pid -> index
    ready_r, ready_w = os.pipe()

    started: dict[int, float] = {}  # index -> when its current worker was started
    delays: dict[int, float] = {}  # index -> seconds before its next restart

    def spawn(index: int, first: bool = False) -> None:
        started[index] = time.monotonic()
        pid = gevent.os.fork_and_watch(lambda watcher: exited(watcher.pid, watcher.rstatus, index))
        if pid == 0:  # the worker
            code = 1
            try:
                if first:
                    os.close(ready_r)
                # Only the first workers report readiness: the pipe is closed after that.
                metrics_listener = metrics.in_worker(index) if metrics is not None else None
                code = _worker(sockets[index], web_sockets[index] if web_sockets else None,
                               ready_w if first else None, args, serve, metrics_listener)
            except BaseException:
                log.exception("Worker %d failed", index + 1)
            finally:
                os._exit(code)
        workers[pid] = index

    def exited(pid: int, status: int, index: int) -> None:
        workers.pop(pid, None)
        if stop_requested.is_set():
            return
        # A worker that dies soon after its start is restarted less and less often.
        quick = time.monotonic() - started.get(index, 0) < RESTART_MAX
        delay = delays[index] = min(RESTART_MAX, delays.get(index, RESTART_MIN / 2) * 2) if quick else RESTART_MIN
        log.warning("Worker %d (pid %d) ended (status %d); starting it again in %.1f s", index + 1, pid, status, delay)
        gevent.spawn_later(delay, lambda: None if stop_requested.is_set() else spawn(index))

    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop_requested.set)
    for index in range(args.workers):
        spawn(index, first=True)
    os.close(ready_w)
    ready = 0
    gevent.os.make_nonblocking(ready_r)
    with gevent.Timeout(30, False):
        while ready < args.workers:
            data = gevent.os.nb_read(ready_r, 64)
            if not data:
                break
            ready += len(data)
    if ready < args.workers:
        print(f"Error: {args.workers - ready} worker(s) did not start", file=sys.stderr)
        stop_requested.set()
        _stop_workers(workers)
        if metrics is not None:
            metrics.close()
        return 1
    lifecycle.info("Server listening on %s", describe_peer((args.host, port)))
    if web_sockets:
        scheme = "https" if args.certfile else "http"
        lifecycle.info("Web client on %s://%s/", scheme, describe_peer((args.host, web_sockets[0].getsockname()[1])))
    while not stop_requested.wait(1.0):  # a timer keeps the loop alive: nothing else here does
        pass
    _stop_workers(workers)
    if metrics is not None:
        metrics.close()
    for sock in sockets + web_sockets:
        sock.close()
    lifecycle.info("Server stopped")
    return 0


def _shared_sockets(host: str, port: int, count: int) -> list:
    """``count`` listening sockets on one address (SO_REUSEPORT): the kernel spreads the
    connections over them, one per worker. Port 0: the first gets a free port, the others
    the same. Raises OSError (the sockets made so far closed) if the address is unusable."""
    import socket

    from .server import LISTEN_BACKLOG

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        # SO_REUSEPORT would let us share a port some other server of ours (same user,
        # also SO_REUSEPORT) listens on: a plain bind first makes that "in use".
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(LISTEN_BACKLOG)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _stop_workers(workers: dict[int, int], timeout: float = 10.0) -> None:
    import os
    import signal

    import gevent

    for pid in list(workers):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while workers and time.monotonic() < deadline:
        gevent.sleep(0.05)
    for pid in list(workers):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker if the parent dies, even by SIGKILL (no orphans)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class _WorkerConsole(logging.Filter):
    """A worker's console: the parent alone says ``Server listening``, ``Web client on``
    and ``Server stopped``."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (msg == "Server stopped" or msg.startswith(("Server listening on", "Web client on")))


def _worker(sock, web_sock, ready_w: int | None, args, serve, metrics_listener=None) -> int:
    import os

    from gevent import socket as gsocket

    _die_with_parent()
    for handler in logging.getLogger("geventchat").handlers:
        handler.addFilter(_WorkerConsole())
    listener = gsocket.socket(sock.family, sock.type, fileno=os.dup(sock.fileno()))
    if ready_w is None:
        # Started again while the others run: serve at once even if Redis is away now
        # (the kernel keeps sending this worker its share of new connections).
        args.redis_link_now = False
    web_listener = None
    if web_sock is not None:
        web_listener = gsocket.socket(web_sock.family, web_sock.type, fileno=os.dup(web_sock.fileno()))

    def ready() -> None:
        if ready_w is not None:
            os.write(ready_w, b"1")
            os.close(ready_w)

    return serve(args, listener, ready=ready, web_listener=web_listener, metrics_listener=metrics_listener)
