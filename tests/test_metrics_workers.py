"""--metrics-port with --workers: one page, served by the parent, covering every worker.

Real processes: a ``--workers 2`` server over a real redis-server; the parent's page is
read over HTTP (urllib) and parsed with prometheus-client's own parser. ``merge`` (how the
parent re-labels the workers' pages) is also checked in-process against the
single-process page.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import time
import urllib.request

import pytest
from conftest import HOST, run_server_command
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis_fixture import redis_server  # noqa: F401  (fixture)
from test_cluster import connect_over_both, members_per_process

from geventchat.server.metrics import COUNTERS, Stats, StatsCollector
from geventchat.server.workermetrics import merge

pytestmark = pytest.mark.timeout(90)

METRICS_RE = re.compile(r"Metrics at http://127\.0\.0\.1:(\d+)/metrics$")
WORKER_SOCKET_RE = re.compile(r"/worker-(\d+)\.sock$")


def start_workers(start_server, redis, *flags: str):
    server = start_server("--workers", "2", "--redis-url", redis.url, "--no-presence", "--metrics-port", "0", *flags)
    line = server.wait_for(lambda l: METRICS_RE.search(l) is not None)
    server.metrics_port = int(METRICS_RE.search(line).group(1))  # type: ignore[union-attr]
    return server


def read_page(port: int, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=timeout) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def scrape(port: int) -> dict[str, dict[str, float]]:
    """{sample name: {worker: value}} of the parent's page (samples without other labels),
    checking on the way that every sample has a worker label."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(read_page(port)):
        for sample in family.samples:
            assert "worker" in sample.labels, sample
            if set(sample.labels) == {"worker"}:
                found.setdefault(sample.name, {})[sample.labels["worker"]] = sample.value
    return found


def wait_scrape(port: int, predicate, timeout: float = 10.0) -> dict[str, dict[str, float]]:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if predicate(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"page never matched: {samples}")
        time.sleep(0.1)


def worker_pids(server) -> dict[str, int]:
    """{worker label: pid} of the server's workers, from the unix socket each serves its page on."""
    import psutil

    pids = {}
    for child in psutil.Process(server.pid).children():
        for conn in child.net_connections(kind="unix"):
            match = WORKER_SOCKET_RE.search(conn.laddr or "")
            if match:
                pids[match.group(1)] = child.pid
    return pids


def all_up(samples) -> bool:
    return samples.get("geventchat_worker_up") == {"1": 1.0, "2": 1.0}


# ------------------------------------------------------------------ the page


def test_one_page_covers_every_worker(start_server, redis_server, clients):  # noqa: F811
    import psutil

    server = start_workers(start_server, redis_server)
    port = server.metrics_port
    assert sum(1 for line in server.stdout_lines() if "Metrics at" in line) == 1  # the parent's only
    before = wait_scrape(port, all_up)
    assert before["geventchat_connections_accepted_total"] == {"1": 0, "2": 0}

    group = connect_over_both(server, redis_server, clients, 6)
    senders, receiver = group[:3], group[-1]
    for sender in senders:
        sender.send(*[f"{sender.nick} says {i}" for i in range(5)], "/me waves")
    got = receiver.lines(3 * 6, timeout=10)  # from both workers: all of it was received
    assert len(got) == 18, got

    now = scrape(port)
    accepted = now["geventchat_connections_accepted_total"]
    assert set(accepted) == {"1", "2"}
    assert sum(accepted.values()) == len(group)
    assert sorted(accepted.values()) == members_per_process(redis_server)  # each worker its own
    assert sum(now["geventchat_clients_connected"].values()) == len(group)
    assert sum(now["geventchat_messages_received_total"].values()) == 3 * 6
    # Every figure of the single-process page, once per worker, same names and help texts.
    families = {family.name: family for family in text_string_to_metric_families(read_page(port))}
    for _, name, help_text in COUNTERS:
        assert families[name].documentation == help_text
        assert {s.labels["worker"] for s in families[name].samples} == {"1", "2"}, name
    for name in (
        "geventchat_clients_connected",
        "geventchat_rooms",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ):
        assert set(now[name]) == {"1", "2"}, name
    lobby = {s.labels["worker"]: s.value for s in families["geventchat_room_members"].samples if s.labels["room"] == "lobby"}
    assert lobby == {"1": len(group), "2": len(group)}  # rooms are counted cluster-wide by each
    assert now["geventchat_worker_up"] == {"1": 1, "2": 1}

    # Only the parent listens on the metrics port (the workers dropped their copy).
    workers = worker_pids(server)
    assert sorted(workers) == ["1", "2"]
    for pid in workers.values():
        listening = [c for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
        assert port not in {c.laddr.port for c in listening}
    private_dir = os.path.dirname(
        next(c.laddr for c in psutil.Process(workers["1"]).net_connections(kind="unix") if WORKER_SOCKET_RE.search(c.laddr or ""))
    )

    assert server.stop() == 0
    assert server.stderr_lines() == []
    assert server.count_text("Server stopped") == 1
    assert not os.path.exists(private_dir)  # the workers' sockets are cleaned up
    with pytest.raises(OSError):
        socket.create_connection((HOST, port), timeout=2).close()


def test_a_worker_that_does_not_answer_is_left_out(start_server, redis_server, clients):  # noqa: F811
    server = start_workers(start_server, redis_server)
    port = server.metrics_port
    wait_scrape(port, all_up)
    workers = worker_pids(server)
    # Stuck: the page waits for it no longer than its timeout, and goes out without it.
    os.kill(workers["1"], signal.SIGSTOP)
    try:
        started = time.monotonic()
        samples = scrape(port)
        assert time.monotonic() - started < 3
    finally:
        os.kill(workers["1"], signal.SIGCONT)
    assert samples["geventchat_worker_up"] == {"1": 0, "2": 1}
    assert set(samples["geventchat_connections_accepted_total"]) == {"2"}
    assert set(samples["process_resident_memory_bytes"]) == {"2"}
    # Dead: left out at once.
    os.kill(workers["1"], signal.SIGKILL)
    started = time.monotonic()
    samples = scrape(port)
    assert time.monotonic() - started < 1
    assert samples["geventchat_worker_up"] == {"1": 0, "2": 1}
    assert set(samples["geventchat_clients_connected"]) == {"2"}
    # Started again: back on the page under the same label, counting from zero.
    server.wait_for(lambda line: line.startswith("Worker 1 (pid") and "starting it again" in line)
    samples = wait_scrape(port, all_up)
    assert samples["geventchat_connections_accepted_total"]["1"] == 0
    assert worker_pids(server)["1"] != workers["1"]
    assert server.stop() == 0
    assert server.stderr_lines() == []


def test_a_worker_started_again_while_the_page_is_read(start_server, redis_server):  # noqa: F811
    # The parent forks the new worker in the middle of a page (worker 2 keeps it waiting
    # for a second; worker 1 is started again 0.5 s after it died): the page is still the
    # parent's, whole, and the new worker does not answer it.
    server = start_workers(start_server, redis_server)
    port = server.metrics_port
    wait_scrape(port, all_up)
    workers = worker_pids(server)
    os.kill(workers["2"], signal.SIGSTOP)
    try:
        os.kill(workers["1"], signal.SIGKILL)
        samples = scrape(port)
    finally:
        os.kill(workers["2"], signal.SIGCONT)
    assert samples["geventchat_worker_up"] == {"1": 0, "2": 0}
    assert set(samples) == {"geventchat_worker_up"}
    wait_scrape(port, all_up)
    assert server.stop() == 0
    assert server.stderr_lines() == []


def test_workers_metrics_port_in_use(redis_server):  # noqa: F811
    blocker = socket.socket()
    try:
        blocker.bind((HOST, 0))
        blocker.listen(1)
        taken = blocker.getsockname()[1]
        result = run_server_command(
            "--host", HOST, "--port", "0", "--workers", "2", "--redis-url", redis_server.url, "--metrics-port", str(taken)
        )
    finally:
        blocker.close()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot serve metrics on 127.0.0.1:{taken}: port {taken} is already in use"
    ]
    assert result.stdout == ""  # no worker started


# ------------------------------------------------------------ merge, in-process


class _Hub:
    def room_counts(self):
        return [("lobby", 3), ('odd "room"\\', 1)]


def single_process_page(connected: int) -> str:
    stats = Stats()
    stats.connections_accepted = connected
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats, _Hub(), lambda: connected))
    ProcessCollector(registry=registry)
    return generate_latest(registry).decode()


def merged_page(pages) -> str:
    class Merged:
        def collect(self):
            return merge(pages)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged())
    return generate_latest(registry).decode()


def test_merge_is_the_single_process_page_with_a_worker_label():
    single = single_process_page(4)
    page = merged_page([single])
    without_label = re.sub(r'\{worker="1"\}', "", page).replace(',worker="1"', "").replace('worker="1",', "")
    assert without_label.split("# HELP geventchat_worker_up")[0] == single


def test_merge_labels_each_worker_and_leaves_out_the_silent():
    merged = merge([single_process_page(1), None, single_process_page(3)])
    families = {family.name: family for family in merged}
    accepted = {s.labels["worker"]: s.value for s in families["geventchat_connections_accepted"].samples}
    assert accepted == {"1": 1, "3": 3}
    members = {(s.labels["worker"], s.labels["room"]) for s in families["geventchat_room_members"].samples}
    assert members == {(w, room) for w in ("1", "3") for room in ("lobby", 'odd "room"\\')}
    up = {s.labels["worker"]: s.value for s in families["geventchat_worker_up"].samples}
    assert up == {"1": 1, "2": 0, "3": 1}
    assert list(families)[-1] == "geventchat_worker_up"


def test_merge_takes_an_unreadable_page_for_no_answer(caplog):
    with caplog.at_level(logging.WARNING, logger="geventchat"):
        merged = merge(["# TYPE x counter\nx{oops 1\n", single_process_page(2)])
    up = {s.labels["worker"]: s.value for s in merged[-1].samples}
    assert up == {"1": 0, "2": 1}
    assert [r.getMessage() for r in caplog.records if "Worker 1 sent metrics that cannot be read" in r.getMessage()]
