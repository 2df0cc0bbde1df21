"""One benchmark run: spawn the worker processes, pace the connections, start, watch, sum up."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait

import numpy as np
import psutil

from bench.servers import ServerMeter
from bench.worker import HEADER, MAX_SENDERS, Plan, run_worker

# Seconds of silence before an idle run reads the server's memory a second time (see
# run()): the first reading is taken as soon as every client has its welcome.
IDLE_SETTLE_S = 5.0


@dataclass
class Scenario:
    clients: int = 100
    senders: int | None = None  # None: every client sends
    messages: int = 200
    size: int = 64
    rate: float = 0.0
    window: int = 0  # 0: chosen from the sizes
    procs: int = 2
    timeout: float = 120.0
    connect_batch: int = 100
    connect_timeout: float = 60.0
    stall: float = 5.0
    coalesce: float = 0.001
    idle: bool = False  # connect, measure memory, disconnect: no messages
    progress: bool = True
    protocol: str = "line"  # or "irc" (bench.worker)
    irc_login: str = ""  # IRC lines after 001 (bench.ircservers.login_lines)
    room: str | None = ""  # the room the line clients /join first ("": lobby, no /join; None: cli decides)
    extra: dict = field(default_factory=dict)

    def n_senders(self) -> int:
        if self.idle:
            return 0
        s = self.clients if self.senders is None else self.senders
        return max(0, min(s, self.clients, MAX_SENDERS - 1))

    def expected(self) -> int:
        return self.n_senders() * self.messages * max(0, self.clients - 1)

    def auto_window(self) -> int:
        if self.window > 0:
            return self.window
        s = max(1, self.n_senders())
        # keep what is in flight towards one receiver well under a server's 1 MiB send queue
        budget = 256 * 1024
        overhead = 60 if self.protocol == "irc" else 16  # ":nick!user@host PRIVMSG #bench :", "nick: "
        return int(max(1, min(64, budget // (s * (self.size + overhead)))))

    def describe(self) -> str:
        if self.idle:
            return f"{self.clients} idle clients"
        text = f"{self.clients} clients, {self.n_senders()} senders x {self.messages} messages of {self.size} B"
        if self.rate:
            text += f" at {self.rate:g}/s each"
        if self.protocol == "irc":
            text += ", over IRC"
        elif self.room:
            text += f", in room {self.room}"
        return text


# A message phase shorter than this is mostly start-up and timer resolution: its rates
# (and their ratios) are shown with a warning instead of as figures to compare.
MIN_MEASURABLE_S = 0.5


class BenchError(Exception):
    """The run could not be made (server did not start, clients could not connect)."""


def _percentile(samples: np.ndarray, q: float) -> float:
    if samples.size == 0:
        return 0.0
    return float(np.percentile(samples, q)) / 1000.0


def run(sc: Scenario, host: str, port: int | list[int], server_pid: int = 0, label: str = "", bus_pid: int = 0) -> dict:
    """One run against ``host`` at ``port`` (or spread over several ports, client i on
    ``ports[i % len(ports)]``); ``server_pid``'s process tree is measured as the server,
    ``bus_pid`` (a Redis linking server processes) separately as the bus."""
    ports = list(port) if isinstance(port, (list, tuple)) else [port]
    port = ports[0]
    if sc.size < HEADER + 1:
        raise BenchError(f"--size must be at least {HEADER + 1} bytes (the header is {HEADER})")
    try:  # resolve once here, not in every connect
        host = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise BenchError(f"cannot resolve {host}: {exc}") from None
    N = sc.clients
    S = sc.n_senders()
    K = max(1, min(sc.procs, N // 2 if N >= 2 else 1))
    expected = sc.expected()
    meter = ServerMeter(server_pid)
    bus = ServerMeter(bus_pid)
    per_worker_expected = max(1, expected // K)
    sample_every = max(1, per_worker_expected // 1_000_000)
    base_ns = time.monotonic_ns()
    ctx = mp.get_context("fork")
    pipes = []
    procs = []
    rss0 = meter.rss()
    try:
        for k in range(K):
            plan = Plan(
                host=host,
                port=port,
                indices=list(range(k, N, K)),
                clients=N,
                senders=S,
                messages=sc.messages,
                size=sc.size,
                window=sc.auto_window(),
                rate=sc.rate,
                base_ns=base_ns,
                connect_batch=max(1, sc.connect_batch // K),
                connect_timeout=sc.connect_timeout,
                sample_every=sample_every,
                coalesce=sc.coalesce,
                run_limit=sc.timeout + 120,
                ports=tuple(ports) if len(ports) > 1 else (),
                protocol=sc.protocol,
                irc_login=sc.irc_login,
                room=sc.room,
            )
            parent, child = ctx.Pipe()
            p = ctx.Process(target=run_worker, args=(plan, child), daemon=True, name=f"bench-worker-{k}")
            p.start()
            child.close()
            pipes.append(parent)
            procs.append(p)
        res = _drive(sc, pipes, procs, meter, bus, rss0, expected, N, S, K, label)
        res["ports"] = ports
        return res
    finally:
        for parent in pipes:
            try:
                parent.send(("stop",))
            except (OSError, BrokenPipeError):
                pass
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()  # our own worker, by its handle
                p.join(5)


def _recv(pipe, timeout: float):
    if pipe.poll(timeout):
        return pipe.recv()
    return None


def _drive(sc, pipes, procs, meter, bus, rss0, expected, N, S, K, label) -> dict:
    from tqdm import tqdm

    show = sc.progress
    # ---------------------------------------------------------------- connect phase
    connected = {}
    deadline = time.monotonic() + sc.connect_timeout + 30
    bar = tqdm(
        total=N, desc=f"{label + ': ' if label else ''}connecting", unit="client", disable=not show, leave=False, mininterval=0.3
    )
    while len(connected) < K and time.monotonic() < deadline:
        for pipe in wait([p for p in pipes if id(p) not in connected], timeout=0.5):
            try:
                msg = pipe.recv()
            except EOFError:
                raise BenchError("a load-generator worker died while connecting")
            if msg[0] == "connected":
                connected[id(pipe)] = msg
                bar.update(len(range(pipes.index(pipe), N, K)))
        if any(not p.is_alive() for p in procs) and len(connected) < K:
            raise BenchError("a load-generator worker died while connecting")
    bar.close()
    if len(connected) < K:
        raise BenchError("clients did not finish connecting in time")
    t0 = min(m[1] for m in connected.values())
    t1 = max(m[2] for m in connected.values())
    connect_s = (t1 - t0) / 1e9
    connect_failed = sum(m[3] for m in connected.values())
    connect_error = next((m[4] for m in connected.values() if m[4]), "")
    # Memory right after every client has its welcome, and (idle runs) once they have been
    # silent for a while: geventchat releases a silent connection's reader greenlet after
    # 2 s (its limits.PARK_AFTER), so idle memory is read again after 5 s of silence.
    rss_welcome = meter.rss() if sc.idle else None
    time.sleep(IDLE_SETTLE_S if sc.idle else 0.05)
    rss1 = meter.rss()

    # ---------------------------------------------------------------- run phase
    cpu0 = meter.cpu()
    bus0 = bus.cpu()
    server_procs = meter.processes()
    sys0 = psutil.cpu_times()
    t_go = time.monotonic_ns()
    for pipe in pipes:
        pipe.send(("go", t_go))
    progress = {id(p): (0, 0, False) for p in pipes}
    results = {}
    bar = tqdm(
        total=expected,
        desc=f"{label + ': ' if label else ''}deliveries",
        unit="line",
        unit_scale=True,
        disable=not show or sc.idle,
        leave=False,
        mininterval=0.3,
    )
    last_total = 0
    last_change = time.monotonic()
    ended = "done"
    hard_deadline = time.monotonic() + sc.timeout
    while not sc.idle:
        for pipe in wait(pipes, timeout=0.2):
            try:
                msg = pipe.recv()
            except EOFError:
                raise BenchError("a load-generator worker died during the run")
            if msg[0] == "progress":
                progress[id(pipe)] = msg[1:]
        total = sum(v[0] for v in progress.values())
        if total != last_total:
            bar.update(total - last_total)
            last_total = total
            last_change = time.monotonic()
        if all(v[2] for v in progress.values()):
            break
        now = time.monotonic()
        if now - last_change > sc.stall:
            ended = f"stalled: no delivery for {sc.stall:g} s"
            break
        if now > hard_deadline:
            ended = f"timed out after {sc.timeout:g} s"
            break
        if any(not p.is_alive() for p in procs):
            raise BenchError("a load-generator worker died during the run")
    cpu1 = meter.cpu()
    bus1 = bus.cpu()
    sys1 = psutil.cpu_times()
    t_stop = time.monotonic_ns()
    bar.close()
    for pipe in pipes:
        pipe.send(("stop",))
    deadline = time.monotonic() + 60
    while len(results) < K and time.monotonic() < deadline:
        for pipe in wait([p for p in pipes if id(p) not in results], timeout=0.5):
            try:
                msg = pipe.recv()
            except EOFError:
                raise BenchError("a load-generator worker died before reporting")
            if msg[0] == "result":
                results[id(pipe)] = msg[1]
    if len(results) < K:
        raise BenchError("a load-generator worker did not report")
    res = _summarise(
        sc,
        list(results.values()),
        expected,
        N,
        S,
        K,
        t_go,
        t_stop,
        cpu0,
        cpu1,
        connect_s,
        connect_failed,
        connect_error,
        rss0,
        rss1,
        ended,
        _busy(sys1) - _busy(sys0),
        (bus1 - bus0) if bus0 is not None and bus1 is not None else None,
    )
    res["server_processes"] = server_procs
    if rss_welcome is not None and rss0 and N and not connect_failed:
        res["server_rss_per_client_at_welcome_kib"] = (rss_welcome - rss0) / 1024 / N
    return res


def _busy(t) -> float:
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _summarise(
    sc,
    parts,
    expected,
    N,
    S,
    K,
    t_go,
    t_stop,
    cpu0,
    cpu1,
    connect_s,
    connect_failed,
    connect_error,
    rss0,
    rss1,
    ended,
    machine_busy,
    bus_cpu=None,
) -> dict:
    delivered = sum(p["delivered"] for p in parts)
    last = max((p["last_recv_ns"] for p in parts), default=0)
    wall = max(1e-9, (t_stop - t_go) / 1e9)
    duration = (last - t_go) / 1e9 if last > t_go else wall
    samples = np.concatenate([p["lat_samples_us"] for p in parts]) if parts else np.zeros(0)
    lat_max = max((p["lat_max_us"] for p in parts), default=0) / 1000.0
    gen_cpu = sum(p["cpu_s"] for p in parts)
    worker_util = [p["cpu_s"] / wall for p in parts]
    server_cpu = (cpu1 - cpu0) if (cpu0 is not None and cpu1 is not None) else None
    cores = os.cpu_count() or 1
    warnings = []
    if not sc.idle and worker_util and max(worker_util) > 0.85:
        warnings.append(
            f"generator saturated: a worker process used {max(worker_util):.0%} of a core; "
            "the figures may measure the load generator, not the server (try --procs)"
        )
    other = (machine_busy - gen_cpu - (server_cpu or 0.0) - (bus_cpu or 0.0)) / wall
    if not sc.idle and machine_busy > 0.9 * cores * wall:
        warnings.append(
            f"all {cores} cores were busy (server {(server_cpu or 0) / wall:.2f}, "
            + (f"bus {bus_cpu / wall:.2f}, " if bus_cpu is not None else "")
            + f"generator {gen_cpu / wall:.2f}, other processes {max(0.0, other):.2f}): "
            "the server was short of CPU, not only of work"
        )
    if not sc.idle and other > 0.25:
        warnings.append(f"other processes used {other:.2f} cores during the run: figures are noisy")
    if connect_failed:
        warnings.append(f"{connect_failed} clients failed to connect: {connect_error}")
    disconnected = sum(p["disconnected"] for p in parts) - connect_failed
    if disconnected > 0:
        first = next((p["first_disconnect"] for p in parts if p["first_disconnect"]), "")
        warnings.append(f"{disconnected} clients were disconnected during the run ({first})")
    if ended != "done":
        warnings.append(ended)
    too_short = not sc.idle and delivered > 0 and duration < MIN_MEASURABLE_S
    if too_short:
        warnings.append(
            f"the messages took {duration * 1000:.0f} ms: too short to measure (under {MIN_MEASURABLE_S:g} s); "
            "rates and ratios mean little: send more --messages"
        )
    lost = sum(p["lost"] for p in parts)
    sent = sum(p["sent"] for p in parts)
    res = {
        "scenario": sc.describe(),
        "protocol": sc.protocol,
        "clients": N,
        "senders": S,
        "messages": sc.messages,
        "size": sc.size,
        "rate": sc.rate,
        "window": sc.auto_window(),
        "procs": K,
        "expected": expected,
        "delivered": delivered,
        "lost": lost,
        "duplicates": sum(p["duplicates"] for p in parts),
        "reordered": sum(p["reordered"] for p in parts),
        "unexpected": sum(p["unexpected"] for p in parts),
        "sent": sent,
        "duration_s": duration,
        "deliveries_per_s": delivered / duration if duration > 0 else 0.0,
        "messages_per_s": (delivered / (N - 1) / duration) if (N > 1 and duration > 0) else 0.0,
        "latency_ms": {
            "p50": _percentile(samples, 50),
            "p99": _percentile(samples, 99),
            "max": lat_max,
            "samples": int(samples.size),
        },
        "connect_s": connect_s,
        "connect_failed": connect_failed,
        "disconnected": max(0, disconnected),
        "generator_cpu_s": gen_cpu,
        "generator_cores": gen_cpu / wall,
        "generator_worker_util": [round(u, 3) for u in worker_util],
        "server_cpu_s": server_cpu,
        "server_cores": (server_cpu / wall) if server_cpu is not None else None,
        "machine_cores_busy": machine_busy / wall,
        # CPU used meanwhile by neither the server nor the generator (other work on the machine)
        "other_cores_busy": max(0.0, other),
        "deliveries_per_server_cpu_s": (delivered / server_cpu) if server_cpu else None,
        # per message sent (one line in, N-1 deliveries out), in microseconds of CPU
        "server_cpu_us_per_message": (server_cpu / sent * 1e6) if (server_cpu is not None and sent) else None,
        "bus_cpu_s": bus_cpu,
        "bus_cores": (bus_cpu / wall) if bus_cpu is not None else None,
        "bus_cpu_us_per_message": (bus_cpu / sent * 1e6) if (bus_cpu is not None and sent) else None,
        "server_rss_before_kib": (rss0 // 1024) if rss0 is not None else None,
        "server_rss_after_connect_kib": (rss1 // 1024) if rss1 is not None else None,
        "server_rss_per_client_kib": ((rss1 - rss0) / 1024 / N) if (rss0 and rss1 and N and not connect_failed) else None,
        "ended": ended,
        "warnings": warnings,
        "too_short": too_short,
    }
    res["ok"] = (
        res["lost"] == 0 and res["duplicates"] == 0 and res["reordered"] == 0 and res["unexpected"] == 0 and connect_failed == 0
    )
    return res
