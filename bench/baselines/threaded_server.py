"""The classic thread-per-client chat server of the original assignment (mychatserver.py).

One thread per client reads lines and relays ``<client_port>: <message>`` to every other
client with a blocking ``sendall`` each; ``exit`` leaves. It also sends a ``*** Welcome``
first line, so that the benchmark can treat every server alike. This is a baseline for
``python -m bench --compare``: deliberately the straightforward design, not a tuned one.

    python -m bench.baselines.threaded_server --host 127.0.0.1 --port 0
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

from bench.baselines._common import bind_listener, parse_args, say, welcome


class Server:
    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.clients: dict[socket.socket, threading.Lock] = {}
        self.lock = threading.Lock()

    def broadcast(self, sender: socket.socket, data: bytes) -> None:
        with self.lock:
            targets = [(c, lk) for c, lk in self.clients.items() if c is not sender]
        for conn, send_lock in targets:
            try:
                with send_lock:  # whole lines, even when two senders write to one client
                    conn.sendall(data)
            except OSError:
                pass  # its own thread notices and cleans up

    def handle(self, conn: socket.socket, addr) -> None:
        port = addr[1]
        prefix = f"{port}: ".encode()
        try:
            send_lock = threading.Lock()
            with send_lock:  # a member before the welcome: the welcome promises it
                with self.lock:
                    self.clients[conn] = send_lock
                conn.sendall(welcome(str(port)))
            reader = conn.makefile("rb")
            for raw in reader:
                line = raw.rstrip(b"\r\n")
                if line == b"exit":
                    break
                self.broadcast(conn, prefix + line + b"\n")
        except OSError:
            pass
        finally:
            with self.lock:
                self.clients.pop(conn, None)
            try:
                conn.close()
            except OSError:
                pass
            if VERBOSE:
                say(f"Client {addr[0]}:{port} disconnected")

    def serve(self) -> None:
        while True:
            conn, addr = self.listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if VERBOSE:
                say(f"New connection from {addr[0]}:{addr[1]}")
            threading.Thread(target=self.handle, args=(conn, addr), daemon=True).start()


VERBOSE = False


class _Stop(Exception):
    pass


def main(argv=None) -> int:
    global VERBOSE
    args = parse_args(
        "Thread-per-client chat server (benchmark baseline).",
        argv,
        lambda p: p.add_argument("--verbose", action="store_true", help="log each connection"),
    )
    VERBOSE = args.verbose
    listener = bind_listener(args.host, args.port)
    host, port = listener.getsockname()[:2]
    server = Server(listener)

    def stop(signum, frame):
        raise _Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    say(f"Server listening on {host}:{port}")
    try:
        server.serve()
    except _Stop:
        pass
    listener.close()
    with server.lock:
        conns = list(server.clients)
    for conn in conns:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    say("Server stopped")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
