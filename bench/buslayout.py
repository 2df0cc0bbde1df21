"""How rooms map to Redis channels: one channel per cluster, or one per room. Measured.

``python -m bench.buslayout`` starts its own redis-server on a free 127.0.0.1 port and,
for each number of rooms and each fraction of rooms a process serves, runs both layouts:

- ``cluster`` (what geventchat/bus.py does): every batch is one PUBLISH to ``PREFIX:bus``;
  every subscriber decodes every record and drops the rooms it has no member in;
- ``room``: the publisher groups each batch by room and publishes one message per room
  present to ``PREFIX:room:KEY`` (all in one pipelined round trip); a subscriber subscribes
  to its rooms' channels only and decodes what it gets.

The processes: P subscribers (the "server processes", each with members in a fixed set of
rooms) and one or more publishers that send a fixed number of lines, spread uniformly at
random (seeded) over the rooms, in batches of ``--batch`` records. The wire format is the
bus's own (``_payloads``, ``_REC``, ``_KEY``, ``ROOM`` from geventchat.bus). Every
subscriber counts the records it kept; a count that differs from the model's is a failure,
never a figure. Reported per run: wall time, records/s kept, messages, and the CPU time of
redis-server, of the subscribers (summed) and of the publishers, also per published line.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import json
import multiprocessing as mp
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import gevent
import psutil

from geventchat.chat.bus import _KEY, _REC, ROOM, _payloads

LAYOUTS = ("cluster", "room")
PREFIX = "buslayout"
CONTROL_CHANNEL = PREFIX + ":ctl"  # end markers, subscribed to in both layouts
END = "E"  # record kind of a publisher's end marker (the bus never uses it)

# The publishers run freely, faster than the subscribers drain, so a subscriber's backlog
# in Redis can exceed the default pub/sub limit (32 MB) and Redis would cut it: a measure of
# throughput, not of the limit, needs room for the whole backlog.
PUBSUB_BUFFER_LIMIT = "pubsub 1gb 0 0"


class MeasurementError(Exception):
    """A run failed or lost lines; the text says which and how."""


@dataclass(frozen=True)
class Setting:
    layout: str
    rooms: int
    fraction: float
    processes: int
    publishers: int
    lines: int
    batch: int
    size: int
    seed: int


def room_key(index: int) -> str:
    return f"room{index}"


def room_channel(key: str) -> str:
    return f"{PREFIX}:room:{key}"


def local_rooms(process: int, processes: int, rooms: int, fraction: float) -> list[int]:
    """The rooms in which ``process`` has members: a run of round(fraction * rooms) rooms
    starting at its share of the circle, so that together the processes cover every room
    (at fraction 1/processes, each room has exactly one process)."""
    count = max(1, min(rooms, int(fraction * rooms + 0.5)))
    start = process * rooms // processes
    return [(start + offset) % rooms for offset in range(count)]


def line_rooms(setting: Setting) -> list[int]:
    """The room of each line, in sending order: uniform, from the seed (the same for both
    layouts, and known to the parent for the expected counts)."""
    rng = random.Random(setting.seed)
    return [rng.randrange(setting.rooms) for _ in range(setting.lines)]


def line_text(serial: int, size: int) -> bytes:
    head = f"<user{serial % 997}> line {serial} "
    return (head + "x" * max(0, size - len(head) - 1))[: size - 1].encode() + b"\n"


def _redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)


# ----------------------------------------------------------------- the processes


def _subscriber(index: int, setting: Setting, url: str, reports: mp.Queue, go: mp.Event) -> None:
    try:
        keys = [room_key(room) for room in local_rooms(index, setting.processes, setting.rooms, setting.fraction)]
        if setting.layout == "cluster":
            channels = [f"{PREFIX}:bus"]
        else:
            channels = [room_channel(key) for key in keys]
        pubsub = _redis_client(url).pubsub()
        pubsub.subscribe(CONTROL_CHANNEL, *channels)
        for _ in range(1 + len(channels)):
            reply = pubsub.parse_response(block=True)
            assert reply[0] == b"subscribe", reply
        # Stands for ClusterHub.rooms: the rooms with a local member, looked up per record.
        rooms = dict.fromkeys(keys, True)
        own = f"sub-{index}".encode() + _REC  # never matches: the check costs what it costs in the bus
        kept = received = messages = ends = 0
        reports.put(("ready", "subscriber", index, None))
        go.wait()
        cpu_start = time.process_time()
        while ends < setting.publishers:
            # As RedisBus._read_messages does: one parsed message, its records decoded.
            message = pubsub.parse_response(block=True)
            if message is None or message[0] != b"message":
                continue
            messages += 1
            payload = message[2]
            if payload.startswith(own):
                continue
            decoded = []
            for record in payload.split(_REC)[1:]:
                head, _, data = record.partition(_KEY)
                head = head.decode()
                decoded.append((head[0], head[1:], data))
            # As ClusterHub.bus_records does, without the delivery to members (the same in both layouts).
            for kind, key, _data in decoded:
                if kind == ROOM:
                    received += 1
                    if rooms.get(key) is not None:
                        kept += 1
                elif kind == END:
                    ends += 1
            gevent.sleep(0)  # the bus yields to the hub after each message: part of its per-message cost
        done_at = time.monotonic()
        cpu = time.process_time() - cpu_start
        pubsub.close()
        reports.put(
            (
                "done",
                "subscriber",
                index,
                {"kept": kept, "received": received, "messages": messages, "cpu_s": cpu, "done_at": done_at},
            )
        )
    except BaseException as exc:
        reports.put(("error", "subscriber", index, f"{type(exc).__name__}: {exc}"))


def _publisher(index: int, setting: Setting, url: str, rooms_of_lines: list[int], reports: mp.Queue, go: mp.Event) -> None:
    try:
        client = _redis_client(url)
        client.ping()
        origin = f"pub-{index}".encode()
        # Encoded as RedisBus.publish does, before the clock: the same cost in both layouts.
        records = []
        for serial in range(index, setting.lines, setting.publishers):
            key = room_key(rooms_of_lines[serial])
            records.append((key, f"{ROOM}{key}\x1f".encode() + line_text(serial, setting.size)))
        channels = {room_key(room): room_channel(room_key(room)) for room in range(setting.rooms)}
        bus_channel = f"{PREFIX}:bus"
        messages = 0
        reports.put(("ready", "publisher", index, None))
        go.wait()
        cpu_start = time.process_time()
        for start in range(0, len(records), setting.batch):
            batch = records[start : start + setting.batch]
            pipe = client.pipeline(transaction=False)
            if setting.layout == "cluster":
                for payload in _payloads(origin, [record for _key, record in batch]):
                    pipe.publish(bus_channel, payload)
            else:
                by_room: dict[str, list[bytes]] = {}
                for key, record in batch:
                    by_room.setdefault(key, []).append(record)
                for key, room_records in by_room.items():
                    for payload in _payloads(origin, room_records):
                        pipe.publish(channels[key], payload)
            messages += len(pipe)
            pipe.execute()  # one round trip per batch, as the bus's publisher
        cpu = time.process_time() - cpu_start
        # After every line on the same connection: Redis delivers it after them.
        client.publish(CONTROL_CHANNEL, _REC.join([origin, f"{END}{index}".encode() + _KEY]))
        client.close()
        reports.put(("done", "publisher", index, {"messages": messages, "cpu_s": cpu}))
    except BaseException as exc:
        reports.put(("error", "publisher", index, f"{type(exc).__name__}: {exc}"))


# ------------------------------------------------------------------ one run


def _collect(reports: mp.Queue, kind: str, count: int, procs: list[mp.Process], deadline: float) -> dict:
    """``count`` reports of ``kind`` ("ready" or "done"), keyed by (role, index)."""
    found = {}
    while len(found) < count:
        try:
            what, role, index, data = reports.get(timeout=0.2)
        except queue.Empty:
            dead = [p.pid for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise MeasurementError(f"process(es) {dead} died without a report") from None
            if time.monotonic() > deadline:
                missing = count - len(found)
                raise MeasurementError(
                    f"timed out waiting for {missing} {kind!r} report(s): lines lost, or too slow for --timeout"
                ) from None
            continue
        if what == "error":
            raise MeasurementError(f"{role} {index} failed: {data}")
        if what != kind:
            raise MeasurementError(f"unexpected {what!r} report from {role} {index} while waiting for {kind!r}")
        found[(role, index)] = data
    return found


def run_setting(setting: Setting, url: str, redis_pid: int, timeout: float) -> dict:
    """One run of one layout; its figures. Raises MeasurementError if any count is off."""
    rooms_of_lines = line_rooms(setting)
    per_room = collections.Counter(rooms_of_lines)
    expected_kept = [
        sum(per_room[room] for room in local_rooms(p, setting.processes, setting.rooms, setting.fraction))
        for p in range(setting.processes)
    ]

    context = mp.get_context("fork")  # the children share the line plan without pickling it
    reports = context.Queue()
    go = context.Event()
    procs = [
        context.Process(target=_subscriber, args=(p, setting, url, reports, go), daemon=True) for p in range(setting.processes)
    ]
    procs += [
        context.Process(target=_publisher, args=(i, setting, url, rooms_of_lines, reports, go), daemon=True)
        for i in range(setting.publishers)
    ]
    redis_process = psutil.Process(redis_pid)
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.start()
        _collect(reports, "ready", len(procs), procs, deadline)
        redis_cpu_start = sum(redis_process.cpu_times()[:2])
        go_at = time.monotonic()
        go.set()
        done = _collect(reports, "done", len(procs), procs, deadline)
        redis_cpu = sum(redis_process.cpu_times()[:2]) - redis_cpu_start
        for proc in procs:
            proc.join(timeout=5)
    finally:
        for proc in procs:  # only ours, by their own handle (PID)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)

    subscribers = [done[("subscriber", p)] for p in range(setting.processes)]
    publishers = [done[("publisher", i)] for i in range(setting.publishers)]
    for p, (report, expected) in enumerate(zip(subscribers, expected_kept)):
        expected_received = setting.lines if setting.layout == "cluster" else expected
        if report["kept"] != expected or report["received"] != expected_received:
            raise MeasurementError(
                f"{setting.layout} layout, {setting.rooms} rooms, fraction {setting.fraction}: subscriber {p} kept "
                f"{report['kept']} of {report['received']} records received; expected {expected} of {expected_received}"
            )
    wall = max(report["done_at"] for report in subscribers) - go_at
    kept = sum(expected_kept)
    subscribers_cpu = sum(report["cpu_s"] for report in subscribers)
    publishers_cpu = sum(report["cpu_s"] for report in publishers)
    per_line = 1e6 / setting.lines
    return {
        **asdict(setting),
        "local_rooms": len(local_rooms(0, setting.processes, setting.rooms, setting.fraction)),
        "wall_s": round(wall, 4),
        "kept": kept,
        "received": sum(report["received"] for report in subscribers),
        "kept_per_s": round(kept / wall),
        "messages_published": sum(report["messages"] for report in publishers),
        "messages_received": sum(report["messages"] for report in subscribers)
        - setting.publishers * setting.processes,  # without the end markers
        "redis_cpu_s": round(redis_cpu, 4),
        "subscribers_cpu_s": round(subscribers_cpu, 4),
        "publishers_cpu_s": round(publishers_cpu, 4),
        "redis_us_per_line": round(redis_cpu * per_line, 3),
        "subscribers_us_per_line": round(subscribers_cpu * per_line, 3),
        "publishers_us_per_line": round(publishers_cpu * per_line, 3),
        "total_us_per_line": round((redis_cpu + subscribers_cpu + publishers_cpu) * per_line, 3),
    }


# ------------------------------------------------------------------ redis-server


def _die_with_parent() -> None:
    """In the child: Linux kills redis-server if this tool dies first (no server left behind)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class RedisServer:
    """A private redis-server on a free 127.0.0.1 port, stopped by its PID."""

    def __init__(self, binary: str = "redis-server") -> None:
        self.binary = shutil.which(binary) or binary
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--client-output-buffer-limit",
            PUBSUB_BUFFER_LIMIT,
        ]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        client = _redis_client(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                self.version = client.info("server")["redis_version"]
                client.close()
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise MeasurementError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


# ------------------------------------------------------------------ command line

COLUMNS = [  # (heading, key, format)
    ("layout", "layout", "{}"),
    ("rooms", "rooms", "{}"),
    ("frac", "fraction", "{:g}"),
    ("local", "local_rooms", "{}"),
    ("wall s", "wall_s", "{:.2f}"),
    ("kept/s", "kept_per_s", "{:,}"),
    ("msgs pub", "messages_published", "{:,}"),
    ("msgs recv", "messages_received", "{:,}"),
    ("redis s", "redis_cpu_s", "{:.2f}"),
    ("subs s", "subscribers_cpu_s", "{:.2f}"),
    ("pub s", "publishers_cpu_s", "{:.2f}"),
    ("redis us/l", "redis_us_per_line", "{:.2f}"),
    ("subs us/l", "subscribers_us_per_line", "{:.2f}"),
    ("pub us/l", "publishers_us_per_line", "{:.2f}"),
    ("total us/l", "total_us_per_line", "{:.2f}"),
]


def format_table(results: list[dict]) -> str:
    rows = [[heading for heading, _, _ in COLUMNS]]
    rows += [[fmt.format(result[key]) for _, key, fmt in COLUMNS] for result in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _numbers(text: str, kind: type) -> list:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("empty list")
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.buslayout",
        description="Measure the two ways rooms can map to Redis pub/sub channels (one channel per cluster filtered "
        "locally, one channel per room) with a private redis-server and real redis-py clients.",
    )
    p.add_argument("--processes", type=_positive, default=4, help="subscriber (server) processes (default 4)")
    p.add_argument("--publishers", type=_positive, default=1, help="publisher processes (default 1)")
    p.add_argument(
        "--rooms",
        type=lambda text: _numbers(text, int),
        default=[1, 10, 100, 1000],
        help="numbers of rooms to sweep, comma-separated (default 1,10,100,1000)",
    )
    p.add_argument(
        "--fraction",
        type=lambda text: _numbers(text, float),
        default=[1.0, 0.25],
        help="fractions of the rooms each process has members in, comma-separated (default 1,0.25)",
    )
    p.add_argument("--lines", type=_positive, default=200_000, help="lines published per run, in all (default 200000)")
    p.add_argument("--batch", type=_positive, default=50, help="records per batch, one round trip each (default 50)")
    p.add_argument("--size", type=_positive, default=64, help="bytes per line (default 64)")
    p.add_argument("--seed", type=int, default=1, help="seed of the lines' rooms (default 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one run may take (default 60)")
    p.add_argument("--json", metavar="FILE", help="also write the settings and figures to FILE as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if any(rooms < 1 for rooms in args.rooms) or any(not 0 < fraction <= 1 for fraction in args.fraction):
        build_parser().error("--rooms must be at least 1 and --fraction in (0, 1]")
    if shutil.which("redis-server") is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 2
    server = RedisServer()
    results = []
    try:
        server.start()
        for rooms in args.rooms:
            for fraction in args.fraction:
                for layout in LAYOUTS:
                    setting = Setting(
                        layout, rooms, fraction, args.processes, args.publishers, args.lines, args.batch, args.size, args.seed
                    )
                    results.append(run_setting(setting, server.url, server.proc.pid, args.timeout))
                    print(
                        f"  {layout:7} rooms={rooms} fraction={fraction:g}: {results[-1]['wall_s']:.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    except MeasurementError as exc:
        print(f"buslayout: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    print(
        f"{args.lines:,} lines of {args.size} B in batches of {args.batch}, {args.publishers} publisher(s), "
        f"{args.processes} subscriber processes, redis-server {server.version}, {os.cpu_count()} CPUs; "
        "CPU in seconds and in microseconds per published line (us/l)"
    )
    print(format_table(results))
    if args.json:
        document = {
            "settings": {key: value for key, value in vars(args).items() if key != "json"},
            "redis": {"version": server.version, "command": server.command},
            "cpus": os.cpu_count(),
            "results": results,
        }
        with open(args.json, "w") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
