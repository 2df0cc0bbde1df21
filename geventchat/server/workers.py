"""``--workers N``: N server processes on one port (SO_REUSEPORT), one chat over Redis."""

from __future__ import annotations

import logging
import sys
import time

from geventchat.chat.bus import BusError, RedisBus
from geventchat.doors.session import describe_peer
from geventchat.server.binding import LISTEN_BACKLOG, describe_bind_error, describe_metrics_bind_error, lifecycle

log = logging.getLogger("geventchat")

# Seconds before a --workers worker that died is started again: RESTART_MIN, doubling up to
# RESTART_MAX while it keeps dying within RESTART_MAX of its start.
RESTART_MIN = 0.5
RESTART_MAX = 10.0


def _give_up(bound: list, error: str) -> int:
    """A start-up error after some ports were bound: close them, say why in one line."""
    for sock in bound:
        sock.close()
    print(error, file=sys.stderr)
    return 1


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

    import gevent.event
    import gevent.os

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
            return _give_up(sockets, describe_bind_error(args.host, args.web_port, exc))
    irc_sockets: list = []
    if args.irc_port is not None:  # the IRC door too: one socket per worker, shared
        try:
            irc_sockets = _shared_sockets(args.host, args.irc_port, args.workers)
        except OSError as exc:
            return _give_up(sockets + web_sockets, describe_bind_error(args.host, args.irc_port, exc))
    doors = web_sockets + irc_sockets  # the other doors' sockets, closed with the chat port's
    metrics = None  # --metrics-port: the parent's page, covering every worker
    if args.metrics_port is not None:
        from geventchat.server.workermetrics import WorkerMetrics

        try:
            metrics = WorkerMetrics(args.host, args.metrics_port, args.workers)
        except OSError as exc:
            return _give_up(sockets + doors, describe_metrics_bind_error(args.host, args.metrics_port, exc))
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
                code = _worker(
                    sockets[index],
                    web_sockets[index] if web_sockets else None,
                    ready_w if first else None,
                    args,
                    serve,
                    metrics_listener,
                    irc_sockets[index] if irc_sockets else None,
                )
            except BaseException:
                log.exception("Worker %d failed", index + 1)
            finally:
                logging.shutdown()  # the console's last lines are written (it flushes once per loop turn)
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
    with gevent.Timeout(30, False):  # type: ignore[arg-type]  # False: end quietly (gevent's stubs miss it)
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
    if irc_sockets:
        lifecycle.info("IRC listening on %s", describe_peer((args.host, irc_sockets[0].getsockname()[1])))
    while not stop_requested.wait(1.0):  # a timer keeps the loop alive: nothing else here does
        pass
    _stop_workers(workers)
    if metrics is not None:
        metrics.close()
    for sock in sockets + doors:
        sock.close()
    lifecycle.info("Server stopped")
    return 0


def _shared_sockets(host: str, port: int, count: int) -> list:
    """``count`` listening sockets on one address (SO_REUSEPORT): the kernel spreads the
    connections over them, one per worker. Port 0: the first gets a free port, the others
    the same. Raises OSError (the sockets made so far closed) if the address is unusable."""
    import socket

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
        return not (msg == "Server stopped" or msg.startswith(("Server listening on", "Web client on", "IRC listening on")))


def _worker(sock, web_sock, ready_w: int | None, args, serve, metrics_listener=None, irc_sock=None) -> int:
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

    irc_listener = None
    if irc_sock is not None:
        irc_listener = gsocket.socket(irc_sock.family, irc_sock.type, fileno=os.dup(irc_sock.fileno()))

    def ready() -> None:
        if ready_w is not None:
            os.write(ready_w, b"1")
            os.close(ready_w)

    return serve(
        args, listener, ready=ready, web_listener=web_listener, metrics_listener=metrics_listener, irc_listener=irc_listener
    )
