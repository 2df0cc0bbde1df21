"""Tests of the load benchmark (bench/) and its baseline servers."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

BASELINES = ["threaded_server", "asyncio_server"]


def start_module(module: str, *args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    for _ in range(10):  # a few lines may come first (with --redis-url, "Redis link up")
        seen.append(proc.stdout.readline())
        match = re.search(r"Server listening on 127\.0\.0\.1:(\d+)", seen[-1])
        if match:
            return proc, int(match.group(1))
    proc.kill()  # ours, and it never said it listens
    proc.communicate(timeout=10)
    raise AssertionError(f"no listening line in {seen}")


def recv_lines(sock: socket.socket, count: int, timeout: float = 5.0) -> list[bytes]:
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n")[:count]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_relays_seed_format_and_stops_on_sigterm(name):
    proc, port = start_module(f"bench.baselines.{name}")
    try:
        a = socket.create_connection(("127.0.0.1", port))
        b = socket.create_connection(("127.0.0.1", port))
        assert recv_lines(a, 1)[0].startswith(b"*** Welcome, ")
        assert recv_lines(b, 1)[0].startswith(b"*** Welcome, ")
        a.sendall(b"hello\r\nworld\n")
        a_port = a.getsockname()[1]
        assert recv_lines(b, 2) == [f"{a_port}: hello".encode(), f"{a_port}: world".encode()]
        a.sendall(b"exit\n")
        a.settimeout(5)
        assert a.recv(100) == b""
        a.close()
        b.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Server stopped" in out


# ----------------------------------------------------------------------------- the checker

from bench.worker import Plan, Worker, format_message  # noqa: E402


def make_worker(senders: int = 3, messages: int = 50, clients: int = 4) -> Worker:
    plan = Plan(
        host="127.0.0.1",
        port=1,
        indices=list(range(clients)),
        clients=clients,
        senders=senders,
        messages=messages,
        size=64,
        window=8,
        rate=0,
        base_ns=time.monotonic_ns(),
        connect_batch=10,
        connect_timeout=1,
        sample_every=1,
    )
    return Worker(plan, None)


def lines(pairs, nick=b"40000: ") -> bytes:
    return b"".join(nick + format_message(s, q, 0, b"pad") for s, q in pairs)


def interleaved(senders, messages):
    return [(s, q) for q in range(messages) for s in senders]


@pytest.mark.parametrize("chunk", [1, 5, 100])  # the per-line path and the numpy path
def test_checker_accepts_in_order_deliveries_in_any_chunking(chunk):
    w = make_worker()
    receiver = w.clients[3]  # not a sender: expects 3 x 50
    data = b"*** Welcome, 40000! You are in lobby. Type /help for commands.\n" + lines(interleaved([0, 1, 2], 50))
    for i in range(0, len(data), chunk * 41 + 7):  # cuts fall mid-line too
        w.on_data(receiver, data[i : i + chunk * 41 + 7])
    assert receiver.got == receiver.expected == 150
    assert (w.stats.duplicates, w.stats.reordered, w.stats.unexpected) == (0, 0, 0)
    assert w.stats.other_lines == 1
    assert w.result(0.0)["lost"] == 3 * 2 * 50  # the three senders, who got nothing, expect 100 each


@pytest.mark.parametrize("chunk", [3, 1000])
def test_checker_classifies_loss_duplicates_reordering_and_echo(chunk):
    w = make_worker()
    receiver = w.clients[0]  # sender 0 itself: expects 2 x 50 from senders 1 and 2
    pairs = interleaved([1, 2], 50)
    pairs.remove((1, 10))  # lost
    pairs.insert(20, (2, 3))  # duplicate
    i = pairs.index((2, 30))
    pairs[i], pairs[i + 1] = pairs[i + 1], pairs[i]  # (2,30) and (1,31) swap: no reordering per sender
    j = pairs.index((2, 40))
    pairs.insert(pairs.index((2, 42)) + 1, pairs.pop(j))  # (2,40) arrives after (2,42)
    pairs.append((0, 7))  # its own line echoed back
    data = lines(pairs)
    step = chunk * 41
    for k in range(0, len(data), step):
        w.on_data(receiver, data[k : k + step])
    res = w.result(0.0)
    assert receiver.got == 99
    assert w.stats.duplicates == 1
    assert w.stats.reordered == 1
    assert w.stats.unexpected == 1
    assert res["lost"] >= 1


# ----------------------------------------------------------------------------- whole runs


def server_under_test() -> str:
    try:
        import geventchat.server  # noqa: F401

        return "geventchat"
    except ImportError:  # until the server exists, the benchmark is checked on the baseline
        return "threaded"


def run_bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


JSON_KEYS = {
    "expected",
    "delivered",
    "lost",
    "duplicates",
    "deliveries_per_s",
    "messages_per_s",
    "latency_ms",
    "connect_s",
    "reordered",
    "server_cpu_s",
    "generator_cpu_s",
}


@pytest.mark.timeout(60)
def test_small_run_against_the_real_server_delivers_exactly(tmp_path):
    out = tmp_path / "run.json"
    proc = run_bench("--server", server_under_test(), "--clients", "12", "--senders", "4", "--messages", "30", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    res = json.loads(out.read_text())
    assert JSON_KEYS <= set(res)
    assert set(res["latency_ms"]) >= {"p50", "p99", "max"}
    assert res["expected"] == 4 * 30 * 11
    assert res["delivered"] == res["expected"]
    assert res["lost"] == res["duplicates"] == res["reordered"] == 0
    assert res["deliveries_per_s"] > 0 and res["latency_ms"]["max"] >= res["latency_ms"]["p50"] > 0
    assert "OK: every delivery arrived once and in order" in proc.stdout
    assert "deliveries/s" in proc.stdout and "latency p99 ms" in proc.stdout


@pytest.mark.timeout(60)
def test_targets_a_running_server_by_host_and_port():
    server, port = start_module("bench.baselines.asyncio_server")
    try:
        proc = run_bench("--host", "127.0.0.1", "--port", str(port), "--clients", "5", "--messages", "20")
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=10)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"delivered\s+400\b", proc.stdout), proc.stdout
    assert re.search(r"server CPU s\s+\d", proc.stdout), "the server's PID was found by its port"


@pytest.mark.timeout(60)
def test_refused_clients_are_reported_as_connect_failures():
    if server_under_test() != "geventchat":
        pytest.skip("needs geventchat's --max-clients")
    server, port = start_module("geventchat.server", "--quiet", "--max-clients", "3")
    try:
        proc = run_bench("--port", str(port), "--clients", "5", "--messages", "5", "--stall", "1")
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=10)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 clients failed to connect: *** Error: server full" in proc.stdout
    assert "connect_failed 2" in proc.stdout


@pytest.mark.timeout(60)
def test_a_lossy_server_makes_it_fail_and_report_the_loss(tmp_path):
    out = tmp_path / "lossy.json"
    proc = run_bench("--server", "lossy", "--clients", "5", "--messages", "40", "--stall", "1", "--json", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    import json

    res = json.loads(out.read_text())
    assert res["lost"] > 0
    assert res["delivered"] + res["lost"] == res["expected"] == 5 * 40 * 4
    assert "FAILED: lost" in proc.stdout


@pytest.mark.timeout(90)
def test_compare_runs_the_baselines(tmp_path):
    out = tmp_path / "compare.json"
    servers = ",".join(
        [server_under_test(), "threaded", "asyncio"] if server_under_test() == "geventchat" else ["threaded", "asyncio"]
    )
    proc = run_bench("--compare", "--servers", servers, "--clients", "6", "--messages", "20", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    res = json.loads(out.read_text())
    assert [r["server"] for r in res["compare"]] == servers.split(",")
    for r in res["compare"]:
        assert r["delivered"] == r["expected"] == 6 * 20 * 5
    assert "threaded" in proc.stdout and "asyncio" in proc.stdout
    if server_under_test() == "geventchat":  # (a run of a fraction of a second shows none)
        assert "geventchat's ratio to each" in proc.stdout or "no ratios: too short to measure" in proc.stdout


@pytest.mark.timeout(60)
def test_compare_exit_status_is_geventchats_and_a_failing_reference_is_shown():
    """A reference server that loses (the threaded baseline not done within --timeout on a
    slow machine, or here the lossy toy) is a figure of its own in --compare: shown as
    FAILED with its loss, while the exit status says whether geventchat lost anything."""
    proc = run_bench("--compare", "--servers", "geventchat,lossy", "--clients", "5", "--messages", "40", "--stall", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "geventchat: OK: every delivery arrived once and in order" in proc.stdout
    assert re.search(r"^lossy: FAILED: lost \d", proc.stdout, re.M), proc.stdout
    assert "the exit status is geventchat's; lossy failed" in proc.stderr
    # Without geventchat in the list, the servers listed are the ones under test.
    alone = run_bench("--compare", "--servers", "lossy", "--clients", "5", "--messages", "40", "--stall", "1")
    assert alone.returncode == 1, alone.stdout + alone.stderr
    assert "lossy: FAILED: lost" in alone.stdout


@pytest.mark.timeout(60)
def test_sweep_draws_a_png_and_idle_measures_memory(tmp_path):
    png = tmp_path / "sweep.png"
    proc = run_bench("--server", "asyncio", "--sweep", "clients=3,6", "--messages", "10", "--plot", str(png))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = run_bench("--server", "asyncio", "--idle", "--clients", "50")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"server RSS/client KiB at welcome\s+-?\d", proc.stdout), proc.stdout
    assert re.search(r"server RSS/client KiB after 5 s\s+-?\d", proc.stdout), proc.stdout


@pytest.mark.timeout(30)
def test_rate_paces_the_senders(tmp_path):
    out = tmp_path / "rate.json"
    proc = run_bench(
        "--server", "asyncio", "--clients", "4", "--senders", "2", "--messages", "15", "--rate", "50", "--json", str(out)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    res = json.loads(out.read_text())
    assert res["delivered"] == 2 * 15 * 3
    assert res["duration_s"] >= 14 / 50 * 0.9  # 15 messages at 50/s take at least 0.28 s


def test_bad_flags_exit_non_zero():
    proc = run_bench("--size", "10", "--clients", "2", "--messages", "1", "--server", "asyncio")
    assert proc.returncode == 2
    assert "--size must be at least" in proc.stderr
    proc = run_bench("--host", "192.0.2.1", "--port", "9")
    assert proc.returncode == 2 and "loopback" in proc.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    proc = run_bench("--port", str(port))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("bench: error: cannot connect to 127.0.0.1:")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    senders=st.integers(1, 4),
    messages=st.integers(1, 40),
)
def test_checker_counts_match_any_interleaving_chunking_loss_and_duplication(data, senders, messages):
    w = make_worker(senders=senders, messages=messages, clients=senders + 1)
    receiver = w.clients[senders]  # not a sender
    queues = {s: list(range(messages)) for s in range(senders)}
    order = []
    while any(queues.values()):  # an interleaving that keeps each sender's order
        s = data.draw(st.sampled_from(sorted(k for k, v in queues.items() if v)))
        order.append((s, queues[s].pop(0)))
    dropped = set(data.draw(st.lists(st.sampled_from(order), max_size=5, unique=True)))
    stream = [p for p in order if p not in dropped]
    dups = data.draw(st.lists(st.integers(0, max(0, len(stream) - 1)), max_size=4)) if stream else []
    for i in sorted(dups, reverse=True):  # a copy of a line, some time after the line itself
        j = data.draw(st.integers(i + 1, len(stream)))
        stream.insert(j, stream[i])
    blob = lines(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=12)))
    for a, b in zip([0] + cuts, cuts + [len(blob)]):
        if b > a:
            w.on_data(receiver, blob[a:b])
    res = w.result(0.0)
    assert receiver.got == senders * messages - len(dropped)
    assert w.stats.duplicates == len(dups)
    assert w.stats.reordered == 0
    assert w.stats.unexpected == 0
    assert receiver.expected - receiver.got == len(dropped)
    assert res["lost"] >= len(dropped)


# ------------------------------------------------------------- several server processes

from redis_fixture import redis_server  # noqa: E402,F401  (fixture)


@pytest.mark.timeout(90)
def test_several_ports_spread_the_clients_over_a_cluster(redis_server, tmp_path):  # noqa: F811
    if server_under_test() != "geventchat":
        pytest.skip("needs geventchat's --redis-url")
    servers = []
    try:
        for _ in range(2):
            servers.append(start_module("geventchat.server", "--quiet", "--redis-url", redis_server.url))
        ports = [port for _, port in servers]
        out = tmp_path / "cluster.json"
        proc = run_bench(
            "--port", f"{ports[0]},{ports[1]}", "--clients", "10", "--senders", "4", "--messages", "25", "--json", str(out)
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        import json

        res = json.loads(out.read_text())
        # each sender's lines crossed to the clients of the other process, exactly once, in order
        assert res["delivered"] == res["expected"] == 4 * 25 * 9
        assert res["ports"] == ports
    finally:
        for server, _ in servers:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=10)


@pytest.mark.timeout(120)
def test_workers_runs_one_process_and_a_cluster_side_by_side(redis_server, tmp_path):  # noqa: F811
    if server_under_test() != "geventchat":
        pytest.skip("needs geventchat's --workers")
    out = tmp_path / "workers.json"
    proc = run_bench("--workers", "0,2", "--clients", "12", "--senders", "3", "--messages", "40", "--json", str(out), timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    res = json.loads(out.read_text())
    one, two = res["workers"]
    assert [one["server"], two["server"]] == ["1 process", "--workers 2"]
    for r in (one, two):
        assert r["delivered"] == r["expected"] == 3 * 40 * 11
    # the cluster's CPU is its parent's and both workers', and Redis's is counted apart
    assert one["server_processes"] == 1 and two["server_processes"] == 3
    assert one["bus_cpu_s"] is None and two["bus_cpu_s"] is not None  # (a short run: 0 s is possible)
    assert two["server_cpu_us_per_message"] is not None
    assert "--workers 2 against the first: deliveries/s x" in proc.stdout
    assert "cost of the bus" in proc.stdout


def test_workers_refuses_a_targeted_server():
    proc = run_bench("--workers", "2", "--port", "9")
    assert proc.returncode == 2 and "--workers starts its own servers" in proc.stderr
    proc = run_bench("--workers", "two")
    assert proc.returncode == 2 and "comma-separated list of counts" in proc.stderr


# ------------------------------------------------------------ the first five minutes


def run_bench_without(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m bench ARGS`` as if ``module`` were not installed (an import of it fails
    as it does when it is missing)."""
    code = (
        f"import runpy, sys; sys.modules[{module!r}] = None; sys.argv = ['bench', *sys.argv[1:]]; "
        "runpy.run_module('bench', run_name='__main__', alter_sys=True)"
    )
    return subprocess.run([sys.executable, "-c", code, "--no-progress", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("module", ["numpy", "psutil", "tqdm"])
def test_a_missing_package_is_one_line_saying_what_to_install(module):
    proc = run_bench_without(module, "--server", "asyncio", "--clients", "2", "--messages", "1")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"bench: error: python -m bench needs {module}: pip install -r requirements.txt (or pip install {module})"
    ]
    assert proc.stdout == ""


@pytest.mark.timeout(30)
def test_sweep_without_matplotlib_says_so_before_running(tmp_path):
    out = tmp_path / "sweep.json"
    proc = run_bench_without("matplotlib", "--server", "asyncio", "--sweep", "clients=2,3", "--messages", "5", "--json", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "matplotlib" in lines[0] and "pip install matplotlib" in lines[0], proc.stderr
    assert proc.stdout == ""  # nothing ran
    assert not out.exists()


def test_plot_without_sweep_is_an_error():
    proc = run_bench("--plot", "chart.png")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage: python -m bench [options]"), proc.stderr
    assert "--plot draws the chart of a --sweep" in lines[1]


def test_sweep_title_says_what_was_run():
    from bench.cli import build_parser, sweep_title

    args = build_parser().parse_args(["--sweep", "clients=10,100,1000", "--messages", "300"])
    # The senders are all the clients of each run, not the first run's 10.
    assert sweep_title("clients", [10, 100, 1000], args) == (
        "python -m bench --sweep clients=10,100,1000: senders all, messages 300 each, size 64 B"
    )
    args = build_parser().parse_args(["--sweep", "size=64,512", "--clients", "50", "--senders", "5", "--rate", "20"])
    assert sweep_title("size", [64, 512], args) == (
        "python -m bench --sweep size=64,512: clients 50, senders 5, messages 200 each, rate 20/s"
    )


def test_help_groups_the_flags():
    proc = run_bench("--help")
    assert proc.returncode == 0
    headings = [line for line in proc.stdout.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert headings == [
        "options:",
        "which server (default: start geventchat):",
        "the scenario:",
        "the load generator:",
        "series and comparisons:",
        "output:",
    ], headings


@pytest.mark.timeout(60)
def test_a_run_too_short_to_measure_says_so(tmp_path):
    proc = run_bench("--server", "asyncio", "--clients", "3", "--messages", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^warning: the messages took \d+ ms: too short to measure", proc.stdout, re.M), proc.stdout
    proc = run_bench("--compare", "--servers", "geventchat,asyncio", "--clients", "3", "--messages", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no ratios: too short to measure (geventchat, asyncio)" in proc.stdout, proc.stdout
    assert "geventchat's ratio to each" not in proc.stdout


@pytest.mark.timeout(60)
def test_a_live_server_is_benchmarked_in_a_room_of_its_own(tmp_path):
    """Against --host/--port the clients /join a fresh room first: someone in lobby sees
    them come and go, and none of their thousands of lines."""
    server, port = start_module("geventchat.server", "--quiet")
    out = tmp_path / "live.json"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as watcher:
            assert recv_lines(watcher, 1)[0].startswith(b"*** Welcome, ")
            proc = run_bench("--host", "127.0.0.1", "--port", str(port), "--clients", "5", "--messages", "40", "--json", str(out))
            watcher.sendall(b"/who\n")  # its reply comes after everything relayed to the watcher
            seen = b""
            watcher.settimeout(5)
            while b"*** Members of lobby" not in seen:
                chunk = watcher.recv(65536)
                assert chunk, seen
                seen += chunk
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=10)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"scenario: .*, in room bench-[0-9a-f]{6},", proc.stdout), proc.stdout
    import json

    res = json.loads(out.read_text())
    assert res["delivered"] == res["expected"] == 5 * 40 * 4
    lines = seen.decode().splitlines()
    assert all(line.startswith("*** ") for line in lines), lines  # presence and the reply: no chat
    assert sum(" joined lobby" in line for line in lines) >= 5, lines


@pytest.mark.timeout(120)
def test_several_server_args_run_side_by_side_with_ratios_to_the_first(tmp_path):
    db = tmp_path / "history.db"
    out = tmp_path / "variants.json"
    result = run_bench(
        "--clients", "5", "--messages", "40", "--repeat", "2", "--json", str(out),
        "--server-args", "--history 0", "", f"--db {db}",
        timeout=110,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert [v["server"] for v in data["variants"]] == [
        "geventchat --history 0",
        "geventchat (no extra flags)",
        f"geventchat --db {db}",
    ]
    assert all(v["lost"] == 0 and v["delivered"] == v["expected"] == 5 * 40 * 4 for v in data["variants"])
    assert set(data["ratios"]) == {"geventchat (no extra flags)", f"geventchat --db {db}"}
    assert "deliveries_per_s_x" in data["ratios"][f"geventchat --db {db}"]
    assert f"geventchat --db {db} against the first: deliveries/s x" in result.stdout
    assert not db.exists()  # each run had a new database, removed after it
    db.write_bytes(b"")
    refused = run_bench("--clients", "2", "--messages", "2", "--server-args", "", f"--db {db}")
    assert refused.returncode != 0 and "exists" in refused.stderr
