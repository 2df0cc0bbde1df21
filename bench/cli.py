"""``python -m bench``: the command line, the summary tables, --compare, --sweep and --idle."""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys

from bench.ircservers import login_lines
from bench.runner import BenchError, Scenario, run
from bench.servers import PROTOCOL_SERVERS, RedisProcess, ServerProcess, available, find_listener_pid, is_geventchat
from bench.worker import PROTOCOLS

COMPARE_ORDER = ("geventchat", "threaded", "asyncio", "ncat")
# --compare --protocol irc: geventchat's IRC door and real IRC servers from Debian
IRC_COMPARE_ORDER = ("geventchat", "ngircd", "inspircd")
SWEEP_KEYS = ("clients", "senders", "messages", "size", "rate")
DEFAULT_PLOT = "bench-sweep.png"


def _room(text: str) -> str:
    import re

    # The server's room names (contract: 1 to 32 of letters, digits and _-#.)
    if not re.fullmatch(r"[A-Za-z0-9_\-#.]{1,32}", text):
        raise argparse.ArgumentTypeError(f"not a room name (1 to 32 letters, digits or _-#.): {text!r}")
    return text


def fresh_room() -> str:
    """A room nobody is in: the benchmark's own, on a server others use."""
    return f"bench-{os.urandom(3).hex()}"


def plot_needs() -> str | None:
    """The line that says what to install when the charts cannot be drawn, else None."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return "--sweep draws its chart with matplotlib, which is not installed: pip install matplotlib (or: pip install -r requirements-dev.txt)"
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        usage="%(prog)s [options]  (--help lists them)",
        description="Load benchmark for geventchat: N clients in one room, S of them send M numbered, "
        "time-stamped messages; every receiver checks it got each one exactly once, in order. "
        "Reports deliveries/s, messages/s, latency p50/p99/max, connect time, losses, CPU use.",
    )
    target = p.add_argument_group("which server (default: start geventchat)")
    load = p.add_argument_group("the scenario")
    gen = p.add_argument_group("the load generator")
    modes = p.add_argument_group("series and comparisons")
    out = p.add_argument_group("output")
    target.add_argument("--host", default=None, help="target a running server at this address (default: start one)")
    target.add_argument(
        "--port",
        type=_ports,
        default=None,
        metavar="PORT[,PORT...]",
        help="port of the running server to target; several ports (one per server process, "
        "e.g. of a cluster over Redis): the clients are spread over them in turn",
    )
    target.add_argument(
        "--room",
        default=None,
        type=_room,
        help="the room the clients /join before the run (default: with --host/--port a fresh one, bench-XXXXXX, "
        "so that people in lobby are not flooded; a server the bench starts: lobby, no /join)",
    )
    target.add_argument(
        "--server",
        default="geventchat",
        choices=["geventchat", "threaded", "asyncio", "ncat", "lossy", "ngircd", "inspircd"],
        help="which server to start when no --host/--port is given (default geventchat; "
        "ngircd and inspircd speak only --protocol irc)",
    )
    load.add_argument(
        "--protocol",
        default="line",
        choices=PROTOCOLS,
        help="what the clients speak: the line protocol (default) or IRC (register, JOIN #bench, "
        "PRIVMSG; geventchat is started with --irc-port)",
    )
    target.add_argument(
        "--server-pid",
        type=int,
        default=0,
        help="PID of the targeted server, for its CPU and memory (with the processes under it)",
    )
    target.add_argument(
        "--bus-pid", type=int, default=0, help="PID of the Redis that links the targeted server processes, for the bus's CPU"
    )
    modes.add_argument(
        "--workers",
        type=_worker_counts,
        default=None,
        metavar="N[,N...]",
        help="start geventchat with --workers N over a Redis the bench starts (0: one process "
        "without Redis); several counts run side by side, e.g. 0,2, with --repeat",
    )
    load.add_argument("--clients", type=int, default=100, help="connected clients, all in one room (default 100)")
    load.add_argument("--senders", type=int, default=None, help="clients that send (default: all of them)")
    load.add_argument("--messages", type=int, default=200, help="messages per sender (default 200)")
    load.add_argument("--size", type=int, default=64, help="bytes per message, without the newline (default 64)")
    load.add_argument(
        "--rate", type=float, default=0.0, help="messages per second per sender (default: as fast as the window allows)"
    )
    load.add_argument(
        "--window", type=int, default=0, help="messages a sender may have in flight (default: from the sizes, at most 64)"
    )
    gen.add_argument(
        "--procs",
        type=int,
        default=max(2, min(8, (os.cpu_count() or 2) // 2)),
        help="load-generator worker processes (default: half the cores, at least 2)",
    )
    gen.add_argument("--timeout", type=float, default=120.0, help="seconds the message phase may take (default 120)")
    gen.add_argument(
        "--stall", type=float, default=5.0, help="end the run after this many seconds without a delivery (default 5)"
    )
    gen.add_argument(
        "--connect-batch",
        type=int,
        default=100,
        help="connections opened at once, the next batch after these are welcomed (default 100)",
    )
    gen.add_argument("--connect-timeout", type=float, default=60.0, help="seconds for all clients to connect (default 60)")
    modes.add_argument(
        "--idle", action="store_true", help="connect the clients, measure the server's memory per connection, send nothing"
    )
    modes.add_argument(
        "--compare",
        action="store_true",
        help="run the same scenario against geventchat, the threaded and asyncio baselines and ncat --chat "
        "(with --protocol irc: geventchat's IRC door, ngircd and InspIRCd, each started with a config the bench writes)",
    )
    modes.add_argument(
        "--servers",
        default=None,
        help="servers for --compare, comma-separated (default geventchat,threaded,asyncio,ncat; "
        "with --protocol irc geventchat,ngircd,inspircd); geventchat@DIR runs geventchat from the "
        "source tree DIR (e.g. a worktree of an older commit)",
    )
    target.add_argument(
        "--server-args",
        nargs="+",
        default=[""],
        metavar="ARGS",
        help='more flags for the geventchat server the bench starts, in one string (e.g. "--max-sendq 4194304"); '
        "several strings run one server with each, side by side, and give each one's ratios to the first "
        '(e.g. --server-args "--history 0" "" "--db /tmp/x.db")',
    )
    modes.add_argument("--repeat", type=int, default=1, help="runs per server in --compare; the median is shown (default 1)")
    modes.add_argument(
        "--sweep",
        default=None,
        metavar="PARAM=V1,V2,...",
        help="run a series varying one of clients, senders, messages, size, rate (e.g. clients=10,100,1000)",
    )
    out.add_argument(
        "--plot",
        default=None,
        metavar="FILE",
        help=f"PNG file of a --sweep's chart (default {DEFAULT_PLOT}; needs matplotlib)",
    )
    out.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _int_list(text: str, low: int, high: int, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a {what} or a comma-separated list of {what}s: {text!r}") from None
    if not values or any(not low <= v <= high for v in values):
        raise argparse.ArgumentTypeError(f"{what}s are {low} to {high}: {text!r}")
    return values


def _ports(text: str) -> list[int]:
    return _int_list(text, 1, 65535, "port")


def _worker_counts(text: str) -> list[int]:
    return _int_list(text, 0, 64, "count")


def scenario_from(args) -> Scenario:
    return Scenario(
        clients=args.clients,
        senders=args.senders,
        messages=args.messages,
        size=args.size,
        rate=args.rate,
        window=args.window,
        procs=args.procs,
        timeout=args.timeout,
        connect_batch=args.connect_batch,
        connect_timeout=args.connect_timeout,
        stall=args.stall,
        idle=args.idle,
        room=args.room,
        progress=not args.no_progress,
        protocol=args.protocol,
    )


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def run_on(name: str | None, sc: Scenario, args, workers: int = 0) -> dict:
    """One run against a started server ``name`` (geventchat: with ``--workers workers``
    over a Redis started here, when workers > 0), or against --host/--port when name is None."""
    if name is None:
        host = args.host or "127.0.0.1"
        for port in args.port:
            try:
                socket.create_connection((host, port), timeout=5).close()
            except OSError as exc:
                raise BenchError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        if sc.room is None:  # the default: a fresh room of its own, where the server has rooms
            line = sc.protocol == "line"  # (IRC clients join their own channel, #bench)
            sc.room = args.room = fresh_room() if line and _answers_commands(host, args.port[0]) else ""
            if line and not sc.room:
                print(f"note: {host}:{args.port[0]} does not answer /rooms: the clients stay in its one room", file=sys.stderr)
        pid = args.server_pid or find_listener_pid(host, args.port[0])
        where = f"{host}:{','.join(map(str, args.port))}"
        res = run(sc, host, args.port, pid, label=where, bus_pid=args.bus_pid)
        res["server"] = where
        return res
    if workers:
        redis = RedisProcess()
        try:
            redis.start()
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
        try:
            server = ServerProcess(
                name,
                "127.0.0.1",
                sc.clients,
                workers=workers,
                redis_url=redis.url,
                protocol=sc.protocol,
                extra_args=_server_args(args),
            )
            try:
                server.start()
            except RuntimeError as exc:
                raise BenchError(str(exc)) from None
            try:
                label = f"{name} --workers {workers}"
                res = run(sc, server.host, server.port, server.pid, label=label, bus_pid=redis.pid)
            finally:
                server.stop()
        finally:
            redis.stop()
        res["server"] = label
        res["workers"] = workers
        return res
    if name == "ncat":
        # ncat listens with a backlog of 10: more connects at once overflow it and stall
        sc.connect_batch = min(sc.connect_batch, 8)
    server = ServerProcess(name, "127.0.0.1", sc.clients, protocol=sc.protocol, extra_args=_server_args(args))
    if sc.protocol == "irc":
        sc.irc_login = login_lines(name)
    try:
        server.start()
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None
    try:
        res = run(sc, server.host, server.port, server.pid, label=name)
    finally:
        server.stop()
    res["server"] = name
    return res


def _answers_commands(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if the server at ``host:port`` answers ``/rooms`` (geventchat does, privately);
    a server that relays every line (the seed, the baselines) answers nothing to the sender."""
    import time

    try:
        with socket.create_connection((host, port), timeout=timeout) as probe:
            probe.sendall(b"/rooms\n")
            received = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                probe.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = probe.recv(4096)
                if not chunk:
                    return False
                received += chunk
                lines = received.split(b"\n")[:-1]
                # The welcome, then a "*** ROOM (COUNT)" line for each room.
                if any(line.startswith(b"*** ") and line.endswith(b")") for line in lines[1:]):
                    return True
    except OSError:
        pass
    return False


def _server_args(args) -> tuple:
    import shlex

    flags = getattr(args, "server_args", "") or ""
    if isinstance(flags, list):  # --server-args A [B ...]: one set per run (bench/variants.py)
        flags = " ".join(flags)
    return tuple(shlex.split(flags))


# ---------------------------------------------------------------------------- output


def _fmt(v, kind: str = "") -> str:
    if v is None:
        return "-"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "rate":
        return f"{v:,.0f}"
    if kind == "ms":
        return f"{v:.2f}"
    if kind == "s":
        return f"{v:.2f}"
    if kind == "kib":
        return f"{v:.1f}"
    return str(v)


ROWS = [
    ("deliveries/s", lambda r: r["deliveries_per_s"], "rate"),
    ("messages/s", lambda r: r["messages_per_s"], "rate"),
    ("latency p50 ms", lambda r: r["latency_ms"]["p50"], "ms"),
    ("latency p99 ms", lambda r: r["latency_ms"]["p99"], "ms"),
    ("latency max ms", lambda r: r["latency_ms"]["max"], "ms"),
    ("connect s", lambda r: r["connect_s"], "s"),
    ("expected", lambda r: r["expected"], "int"),
    ("delivered", lambda r: r["delivered"], "int"),
    ("lost", lambda r: r["lost"], "int"),
    ("duplicates", lambda r: r["duplicates"], "int"),
    ("reordered", lambda r: r["reordered"], "int"),
    ("server processes", lambda r: r["server_processes"], "int"),
    ("server CPU s", lambda r: r["server_cpu_s"], "s"),
    ("server CPU us/message", lambda r: r["server_cpu_us_per_message"], "s"),
    ("bus (Redis) CPU s", lambda r: r["bus_cpu_s"], "s"),
    ("bus CPU us/message", lambda r: r["bus_cpu_us_per_message"], "s"),
    ("server cores busy", lambda r: r["server_cores"], "s"),
    ("deliveries/server-CPU-s", lambda r: r["deliveries_per_server_cpu_s"], "rate"),
    ("generator CPU s", lambda r: r["generator_cpu_s"], "s"),
    ("generator cores busy", lambda r: r["generator_cores"], "s"),
    ("other load, cores", lambda r: r["other_cores_busy"], "s"),
    ("server RSS/client KiB", lambda r: r["server_rss_per_client_kib"], "kib"),
]

IDLE_ROWS = [
    ("connect s", lambda r: r["connect_s"], "s"),
    ("server RSS before KiB", lambda r: r["server_rss_before_kib"], "int"),
    ("server RSS after KiB", lambda r: r["server_rss_after_connect_kib"], "int"),
    ("server RSS/client KiB at welcome", lambda r: r.get("server_rss_per_client_at_welcome_kib"), "kib"),
    ("server RSS/client KiB after 5 s", lambda r: r["server_rss_per_client_kib"], "kib"),
    ("failed to connect", lambda r: r["connect_failed"], "int"),
]


def table(results: list[dict], idle: bool = False) -> str:
    rows = IDLE_ROWS if idle else ROWS
    names = [r["server"] for r in results]
    head = ["figure"] + names
    body = []
    for title, get, kind in rows:
        line = [title]
        for r in results:
            try:
                line.append(_fmt(get(r), kind))
            except (KeyError, TypeError):
                line.append("-")
        body.append(line)
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    out = ["  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(head))]
    out.append("  ".join("-" * w for w in widths))
    for row in body:
        out.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
    return "\n".join(out)


def ratios(results: list[dict], idle: bool = False, ref: dict | None = None) -> dict:
    """geventchat's (or ``ref``'s) figures relative to each other run (higher is better for it)."""
    if ref is None:
        ref = next((r for r in results if r["server"] == "geventchat"), None)
    out = {}
    if ref is None:
        return out
    for r in results:
        if r is ref:
            continue
        entry = {}
        if idle:
            a, b = ref.get("server_rss_per_client_kib"), r.get("server_rss_per_client_kib")
            if a and b:
                entry["memory_per_client_x_smaller"] = b / a
        else:
            if r["deliveries_per_s"]:
                entry["deliveries_per_s_x"] = ref["deliveries_per_s"] / r["deliveries_per_s"]
            if ref["latency_ms"]["p99"]:
                entry["p99_x_lower"] = r["latency_ms"]["p99"] / ref["latency_ms"]["p99"]
            a, b = ref.get("deliveries_per_server_cpu_s"), r.get("deliveries_per_server_cpu_s")
            if a and b:
                entry["efficiency_x"] = a / b
        out[r["server"]] = entry
    return out


def _median(name: str, runs: list[dict]) -> dict:
    """The median run by throughput, or for --idle by memory per client after the idle wait
    (a failed run counts as the worst); all runs' headline figures kept under "repeats"."""
    idle = runs[0].get("scenario", "").endswith("idle clients")
    if idle:  # no deliveries: the median by memory per client after the idle wait
        ranked = sorted(runs, key=lambda r: (r["ok"], -(r["server_rss_per_client_kib"] or float("inf"))))
    else:
        ranked = sorted(runs, key=lambda r: (r["ok"], r["deliveries_per_s"]))
    best = dict(ranked[len(ranked) // 2])
    if len(runs) > 1 and idle:
        best["repeats"] = [
            {key: r.get(key) for key in ("server_rss_per_client_at_welcome_kib", "server_rss_per_client_kib", "ok")} for r in runs
        ]
        print(
            f"{name}: KiB per client at welcome / after the idle wait, of the {len(runs)} runs: "
            + ", ".join(
                f"{r.get('server_rss_per_client_at_welcome_kib') or 0:.2f} / {r.get('server_rss_per_client_kib') or 0:.2f}"
                for r in runs
            )
            + " (median kept)",
            flush=True,
        )
    elif len(runs) > 1:
        best["repeats"] = [
            {
                "deliveries_per_s": r["deliveries_per_s"],
                "p99_ms": r["latency_ms"]["p99"],
                "deliveries_per_server_cpu_s": r["deliveries_per_server_cpu_s"],
                "other_cores_busy": r["other_cores_busy"],
                "ok": r["ok"],
            }
            for r in runs
        ]
        print(
            f"{name}: deliveries/s of the {len(runs)} runs: "
            + ", ".join(f"{r['deliveries_per_s']:,.0f}" for r in runs)
            + " (median kept)",
            flush=True,
        )
    if not all(r["ok"] for r in runs):
        best["ok"] = False
    print(f"{name}: {verdict(best)}", flush=True)
    for w in best["warnings"]:
        print(f"  warning: {w}", flush=True)
    return best


def _workers_label(n: int) -> str:
    return "1 process" if n == 0 else f"--workers {n}"


def scaling(results: list[dict]) -> dict:
    """Each run's figures over the first's (deliveries/s above 1: more throughput)."""
    ref = results[0]
    out = {}
    for r in results[1:]:
        entry = {}
        if ref["deliveries_per_s"]:
            entry["deliveries_per_s_x"] = r["deliveries_per_s"] / ref["deliveries_per_s"]
        if ref["latency_ms"]["p99"]:
            entry["p99_x"] = r["latency_ms"]["p99"] / ref["latency_ms"]["p99"]
        a, b = ref.get("server_cpu_us_per_message"), r.get("server_cpu_us_per_message")
        if a and b:
            entry["server_cpu_per_message_x"] = b / a
        if a is not None and b is not None:
            # what linking the processes costs per message: their extra CPU and Redis's
            entry["bus_cost_us_per_message"] = b + (r.get("bus_cpu_us_per_message") or 0.0) - a
        out[r["server"]] = entry
    return out


# How each ratio is printed, in this order.
RATIO_TEXT = (
    ("deliveries_per_s_x", "deliveries/s x{:.2f}"),
    ("p99_x", "p99 latency x{:.2f}"),
    ("p99_x_lower", "p99 latency x{:.2f} (theirs / ours)"),
    ("efficiency_x", "deliveries per server-CPU-s x{:.2f}"),
    ("server_cpu_per_message_x", "server CPU per message x{:.2f}"),
    ("bus_cost_us_per_message", "cost of the bus {:.1f} us of CPU per message"),
    ("memory_per_client_x_smaller", "memory per client x{:.2f} (theirs / ours)"),
)


def _ratio_text(entry: dict) -> str:
    return ", ".join(text.format(entry[key]) for key, text in RATIO_TEXT if key in entry)


def print_scaling(sc: dict) -> None:
    if sc:
        print()
    for name, entry in sc.items():
        print(f"{name} against the first: {_ratio_text(entry)}")


def print_ratios(rt: dict, results: list[dict] | None = None) -> None:
    if not rt:
        return
    short = [r["server"] for r in results or () if r.get("too_short")]
    if short:
        print(f"\nno ratios: too short to measure ({', '.join(short)}); send more --messages")
        return
    print("\ngeventchat's ratio to each (above 1: geventchat is better by that factor):")
    for name, entry in rt.items():
        print(f"  vs {name}: {_ratio_text(entry)}")


def verdict(res: dict) -> str:
    if res.get("senders") == 0:
        if res.get("connect_failed"):
            return f"FAILED: {res['connect_failed']:,} of {res['clients']:,} clients could not connect"
        return f"OK: all {res['clients']:,} clients connected"
    bad = []
    for key in ("lost", "duplicates", "reordered", "unexpected", "connect_failed"):
        if res.get(key):
            bad.append(f"{key} {res[key]:,}")
    if not bad:
        return "OK: every delivery arrived once and in order"
    if res.get("lost") and res.get("ended", "done") != "done":
        bad.append(f"the run ended early: {res['ended']}")
    return "FAILED: " + ", ".join(bad)


def _exit_status(results: list[dict]) -> int:
    """0 unless the server under test lost, duplicated or reordered anything.

    With --compare (and --sweep over several servers) that is geventchat: the reference
    servers' failures (the thread-per-client baseline not done by --timeout on a slow
    machine, say) are figures of theirs, shown in the table and in their verdict line,
    not a failure of the run. A list without geventchat is judged on all of its servers.
    """
    under_test = [r for r in results if r.get("server") == "geventchat"] or results
    ok = all(r["ok"] for r in under_test)
    failed = sorted({r["server"] for r in results if not r["ok"]})
    if ok and failed:
        print(f"note: the exit status is geventchat's; {', '.join(failed)} failed as shown above", file=sys.stderr)
    return 0 if ok else 1


def write_json(path: str, payload: dict) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, default=float)
        fh.write("\n")


# ---------------------------------------------------------------------------- modes


def parse_sweep(spec: str) -> tuple[str, list]:
    if "=" not in spec:
        raise BenchError("--sweep needs PARAM=V1,V2,... e.g. clients=10,100,1000")
    key, values = spec.split("=", 1)
    key = key.strip()
    if key not in SWEEP_KEYS:
        raise BenchError(f"--sweep: PARAM must be one of {', '.join(SWEEP_KEYS)}")
    try:
        vals = [float(v) if key == "rate" else int(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise BenchError(f"--sweep: bad values {values!r}") from None
    if not vals:
        raise BenchError("--sweep: no values")
    return key, vals


def sweep_title(key: str, values: list, args) -> str:
    """The chart's title: the sweep and the scenario's other figures, as given (a default
    number of senders is all the clients of each run, not the first run's count)."""
    fixed = {
        "clients": f"{args.clients:,}",
        "senders": "all" if args.senders is None else f"{args.senders:,}",
        "messages": f"{args.messages:,} each",
        "size": f"{args.size} B",
        "rate": f"{args.rate:g}/s" if args.rate else "",
    }
    fixed.pop(key, None)
    swept = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    others = ", ".join(f"{k} {v}" for k, v in fixed.items() if v)
    return f"python -m bench --sweep {key}={swept}: {others}"


def plot_sweep(key: str, results: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = []
    for r in results:
        if r["server"] not in servers:
            servers.append(r["server"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in servers:
        rs = [r for r in results if r["server"] == name]
        xs = [r["sweep_value"] for r in rs]
        ax1.plot(xs, [r["deliveries_per_s"] for r in rs], marker="o", label=name)
        ax2.plot(xs, [r["latency_ms"]["p99"] for r in rs], marker="o", label=name)
    ax2.set_yscale("log")
    for ax, title in ((ax1, "throughput (deliveries/s)"), (ax2, "latency p99 (ms, log)")):
        ax.set_xlabel(key)
        ax.set_title(title)
        if key in ("clients", "senders"):
            ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.host is None) != (args.port is None):
        if args.port is None:
            parser.error("--host needs --port")
        args.host = "127.0.0.1"
    for name in ("clients", "messages", "procs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.plot is not None and not args.sweep:
        parser.error("--plot draws the chart of a --sweep: add --sweep PARAM=V1,V2,...")
    if args.sweep:
        missing = plot_needs()  # before the sweep runs, not after (its figures would be lost)
        if missing:
            print(f"bench: error: {missing}", file=sys.stderr)
            return 2
    if args.room is None and args.port is None:
        args.room = ""  # a server the bench starts: everyone in lobby (the baselines know no /join)
    if args.host is not None and not _is_loopback(args.host):
        parser.error(
            "--host must be a loopback address (127.0.0.0/8, localhost or ::1): the benchmark sends load to this machine only"
        )
    raise_fd_limit()
    try:
        return _main(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


def _main(args) -> int:
    sc = scenario_from(args)
    target = args.port is not None
    if args.compare and target:
        raise BenchError("--compare starts its own servers: leave out --host/--port")
    if args.workers is not None and (target or args.compare):
        raise BenchError("--workers starts its own servers: leave out --host/--port and --compare")
    if args.workers is not None and args.sweep:
        raise BenchError("--workers and --sweep do not go together yet")
    if not target and not args.compare and args.server not in PROTOCOL_SERVERS[args.protocol]:
        raise BenchError(f"--server {args.server} does not speak --protocol {args.protocol}")

    if len(args.server_args) > 1:
        if target or args.compare or args.sweep or args.workers is not None:
            raise BenchError(
                "several --server-args start their own servers: leave out --host/--port, --compare, --sweep, --workers"
            )
        from bench.variants import run_variants

        results, rt = run_variants(args, args.server_args, run_on, scenario_from, _median, table, scaling, print_scaling)
        if args.json:
            write_json(args.json, {**_headline(results[0]), "variants": results, "ratios": rt})
        return _exit_status(results)

    if args.sweep:
        key, values = parse_sweep(args.sweep)
        names = _compare_names(args) if args.compare else [None if target else args.server]
        results = []
        for v in values:
            for name in names:
                sc_v = scenario_from(args)
                setattr(sc_v, key, v)
                res = run_on(name, sc_v, args)
                res["sweep_value"] = v
                results.append(res)
                print(
                    f"{res['server']} {key}={v}: {res['deliveries_per_s']:,.0f} deliveries/s, "
                    f"p99 {res['latency_ms']['p99']:.2f} ms, {verdict(res)}",
                    flush=True,
                )
        plot = args.plot or DEFAULT_PLOT
        plot_sweep(key, results, plot, sweep_title(key, values, args))
        print(f"\nplot written to {plot}")
        if args.json:
            write_json(args.json, {**_headline(results[0]), "sweep": key, "runs": results})
        return _exit_status(results)

    if args.compare:
        names = _compare_names(args)
        print(f"scenario: {sc.describe()}, {sc.procs} generator processes, window {sc.auto_window()}", flush=True)
        by_name: dict[str, list[dict]] = {name: [] for name in names}
        for _ in range(max(1, args.repeat)):  # alternating, so that drifting load hits all alike
            for name in names:
                by_name[name].append(run_on(name, scenario_from(args), args))
        results = [_median(name, by_name[name]) for name in names]
        print()
        print(table(results, idle=sc.idle))
        rt = ratios(results, idle=sc.idle)
        print_ratios(rt, results)
        if args.json:
            write_json(args.json, {**_headline(results[0]), "compare": results, "ratios": rt})
        return _exit_status(results)

    if args.workers is not None:
        if args.server != "geventchat":
            raise BenchError("--workers is for --server geventchat")
        counts = args.workers
        print(f"scenario: {sc.describe()}, {sc.procs} generator processes, window {sc.auto_window()}", flush=True)
        runs: dict[int, list[dict]] = {n: [] for n in counts}
        for _ in range(max(1, args.repeat)):  # alternating, so that drifting load hits all alike
            for n in counts:
                runs[n].append(run_on("geventchat", scenario_from(args), args, workers=n))
        results = [_median(_workers_label(n), runs[n]) for n in counts]
        for n, r in zip(counts, results):
            r["server"] = _workers_label(n)
        print()
        print(table(results, idle=sc.idle))
        scale = scaling(results)
        print_scaling(scale)
        if args.json:
            write_json(args.json, {**_headline(results[0]), "workers": results, "scaling": scale})
        return 0 if all(r["ok"] for r in results) else 1

    res = run_on(None if target else args.server, sc, args)
    print(f"scenario: {res['scenario']}, {res['procs']} generator processes, window {res['window']}")
    print(table([res], idle=sc.idle))
    for w in res["warnings"]:
        print(f"warning: {w}")
    print(verdict(res))
    if args.json:
        write_json(args.json, res)
    return 0 if res["ok"] else 1


def _is_loopback(host: str) -> bool:
    import ipaddress
    import socket

    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def _compare_names(args) -> list[str]:
    default = IRC_COMPARE_ORDER if args.protocol == "irc" else COMPARE_ORDER
    names = [n.strip() for n in (args.servers or ",".join(default)).split(",") if n.strip()]
    out = []
    for n in names:
        if n not in PROTOCOL_SERVERS[args.protocol] and not is_geventchat(n):
            raise BenchError(f"--servers: {n} does not speak --protocol {args.protocol}")
        if not available(n):
            print(f"note: {n} is not available here, skipped", file=sys.stderr)
            continue
        out.append(n)
    if not out:
        raise BenchError("no server to compare")
    return out


def _headline(res: dict) -> dict:
    keys = (
        "expected",
        "delivered",
        "lost",
        "duplicates",
        "reordered",
        "deliveries_per_s",
        "messages_per_s",
        "latency_ms",
        "connect_s",
        "server_cpu_s",
        "generator_cpu_s",
        "deliveries_per_server_cpu_s",
    )
    return {k: res.get(k) for k in keys}
