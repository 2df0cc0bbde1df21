"""A deliberately broken chat server: it drops every Nth relayed line (default 10).

Only for testing the benchmark itself (it must see the loss and exit non-zero).

    python -m bench.baselines.lossy_server --port 0 --drop-every 10
"""

from __future__ import annotations

import asyncio
import signal

from bench.baselines._common import bind_listener, parse_args, say, welcome


async def serve(host: str, port: int, drop_every: int) -> None:
    listener = bind_listener(host, port)
    writers: set[asyncio.StreamWriter] = set()
    counter = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal counter
        prefix = f"{writer.get_extra_info('peername')[1]}: ".encode()
        writer.write(welcome(prefix[:-2].decode()))
        writers.add(writer)
        try:
            while raw := await reader.readline():
                data = prefix + raw.rstrip(b"\r\n") + b"\n"
                for other in list(writers):
                    if other is not writer:
                        counter += 1
                        if counter % drop_every:
                            other.write(data)
        except ConnectionError:
            pass
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(handle, sock=listener)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = listener.getsockname()
    say(f"Server listening on {bound[0]}:{bound[1]}")
    await stop.wait()
    server.close()
    for w in list(writers):
        w.close()


def main(argv=None) -> int:
    args = parse_args(
        "Toy chat server that loses lines (tests the benchmark).",
        argv,
        lambda p: p.add_argument("--drop-every", type=int, default=10, help="drop every Nth relayed line"),
    )
    asyncio.run(serve(args.host, args.port, max(1, args.drop_every)))
    say("Server stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
