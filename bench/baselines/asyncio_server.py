"""An idiomatic asyncio streams chat server (uvloop when importable): a benchmark baseline.

Each client is a coroutine reading lines with ``StreamReader.readline``; a chat line is
relayed as ``<client_port>: <message>`` by ``StreamWriter.write`` to every other client,
and the sender waits on ``drain()`` only for recipients whose buffer grew large.

    python -m bench.baselines.asyncio_server --host 127.0.0.1 --port 0
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

from bench.baselines._common import bind_listener, parse_args, say, welcome

HIGH_WATER = 256 * 1024


class Server:
    def __init__(self) -> None:
        self.writers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        port = peer[1]
        prefix = f"{port}: ".encode()
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(welcome(str(port)))
        self.writers.add(writer)
        try:
            while True:
                try:
                    raw = await reader.readline()
                except (ConnectionError, asyncio.LimitOverrunError, ValueError):
                    break
                if not raw:
                    break
                line = raw.rstrip(b"\r\n")
                if line == b"exit":
                    break
                data = prefix + line + b"\n"
                slow = []
                for other in self.writers:
                    if other is not writer:
                        other.write(data)
                        if other.transport.get_write_buffer_size() > HIGH_WATER:
                            slow.append(other)
                for other in slow:
                    try:
                        await other.drain()
                    except ConnectionError:
                        pass
        finally:
            self.writers.discard(writer)
            writer.close()


async def serve(host: str, port: int) -> None:
    listener = bind_listener(host, port)
    server_state = Server()
    server = await asyncio.start_server(server_state.handle, sock=listener, limit=1 << 16)
    bound = listener.getsockname()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    say(f"Server listening on {bound[0]}:{bound[1]}")
    await stop.wait()
    server.close()
    for writer in list(server_state.writers):
        writer.close()
    await asyncio.sleep(0)


def main(argv=None) -> int:
    args = parse_args("asyncio streams chat server (benchmark baseline; uvloop if installed).", argv)
    try:
        import uvloop  # type: ignore

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(serve(args.host, args.port))
    say("Server stopped")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
