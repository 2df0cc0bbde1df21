"""Metrics (contract section 7): --metrics-port serves Prometheus text at /metrics
(--workers: tests/test_metrics_workers.py).

A real server process; the endpoint is read over HTTP (urllib) and parsed with
prometheus-client's own text parser, and the counters must move as messages flow.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request

import pytest
from conftest import HOST, ChatClient, join_all, run_server_command
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(60)

METRICS_RE = re.compile(r"Metrics at http://127\.0\.0\.1:(\d+)/metrics$")


def metrics_port(server) -> int:
    line = server.wait_for(lambda l: METRICS_RE.search(l) is not None)
    return int(METRICS_RE.search(line).group(1))  # type: ignore[union-attr]


def scrape(port: int) -> dict[str, float]:
    """Every sample of the endpoint: {"name{label=value}": value}."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def wait_metric(port: int, name: str, predicate, timeout: float = 5.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if predicate(samples.get(name)):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} = {samples.get(name)!r}")
        time.sleep(0.05)


def test_counters_move_as_messages_flow(start_server, clients):
    server = start_server("--metrics-port", "0", "--no-presence", "--max-line", "100", "--line-timeout", "1")
    port = metrics_port(server)
    before = scrape(port)
    assert before["geventchat_clients_connected"] == 0
    assert before["geventchat_rooms"] == 0
    assert before["geventchat_messages_received_total"] == 0
    assert before["process_resident_memory_bytes"] > 0

    a, b, c = join_all(clients, server, 3, presence=False)
    for i in range(10):
        a.send(f"message {i}")
    for client in (b, c):
        client.lines(10)
    a.send("/me waves")
    b.lines(1)
    c.lines(1)
    a.send("x" * 200)  # too long
    a.expect("*** Error: line too long (more than 100 bytes); it was discarded")
    b.send("/join side")
    b.expect("*** You are now in side")
    a.send(f"/msg {b.nick} psst")
    b.expect(f"*{a.nick}* psst")
    a.expect(f"*** To {b.nick}: psst")

    now = scrape(port)
    assert now["geventchat_clients_connected"] == 3
    assert now["geventchat_rooms"] == 2
    assert now["geventchat_room_members{room=lobby}"] == 2
    assert now["geventchat_room_members{room=side}"] == 1
    assert now["geventchat_connections_accepted_total"] == 3
    assert now["geventchat_messages_received_total"] == 11  # 10 chat + 1 action
    assert now["geventchat_lines_relayed_total"] == 11 * 2 + 1  # two recipients each, and the /msg
    assert now["geventchat_lines_too_long_total"] == 1
    bytes_in = now["geventchat_bytes_received_total"]
    assert bytes_in >= sum(len(f"message {i}\n") for i in range(10)) + 201
    assert now["geventchat_bytes_sent_total"] >= 2 * sum(len(f"{a.nick}: message {i}\n") for i in range(10))

    # A slowloris: counted as a line timeout; the connected gauge goes down.
    slow = clients(server)
    slow.send_raw(b"never finished")
    server.wait_for_text(f"Client 127.0.0.1:{slow.port} disconnected (line timeout)")
    after = wait_metric(port, "geventchat_clients_connected", lambda v: v == 3)
    assert after["geventchat_line_timeouts_total"] == 1
    assert after["geventchat_idle_timeouts_total"] == 0
    assert after["geventchat_bytes_received_total"] > bytes_in


def test_sendq_drops_and_refusals_are_counted(start_server, clients):
    server = start_server("--metrics-port", "0", "--quiet", "--max-sendq", "20000", "--max-per-ip", "2")
    port = metrics_port(server)
    sender = clients(server)
    stuck = clients(server, rcvbuf=4096)  # never reads
    sender.expect(f"*** {stuck.nick} joined lobby")
    refused = clients(server, welcome=False)
    assert refused.read_to_eof() == ["*** Error: too many connections from your address"]
    payload = "p" * 1000
    dropped = f"Client 127.0.0.1:{stuck.port} disconnected (send queue exceeded)"
    for i in range(200):  # at most 20 MB, far more than the kernel's buffers hold
        sender.send(*(f"{i} {j} {payload}" for j in range(100)))
        if server.count_text(dropped):
            break
    server.wait_for_text(dropped, timeout=20)
    samples = scrape(port)
    assert samples["geventchat_sendq_drops_total"] == 1
    assert samples["geventchat_connections_refused_total"] == 1
    assert samples["geventchat_messages_received_total"] >= 100


def test_web_refusals_are_counted_too(start_server, clients):
    from web_helpers import WsClient, web_port

    server = start_server("--metrics-port", "0", "--web-port", "0", "--max-per-ip", "1", "--max-clients", "1")
    port = metrics_port(server)
    clients(server)
    web = WsClient(web_port(server), welcome=False)
    try:
        assert web.until_closed() == ["*** Error: server full"]
    finally:
        web.close()
    server.wait_for(lambda l: l.startswith(f"Refused connection from 127.0.0.1:{web.port} "))
    samples = scrape(port)
    assert samples["geventchat_connections_refused_total"] == 1
    assert samples["geventchat_connections_accepted_total"] == 1


def test_throttle_waits_are_counted(start_server, clients):
    server = start_server("--metrics-port", "0", "--no-presence", "--rate", "20", "--burst", "1")
    port = metrics_port(server)
    a, b = join_all(clients, server, 2, presence=False)
    a.send("one", "two", "three")
    b.expect(f"{a.nick}: one", f"{a.nick}: two", f"{a.nick}: three")
    assert scrape(port)["geventchat_throttle_waits_total"] >= 1


def test_tls_handshake_failures_are_counted(start_server, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    server = start_server(
        "--metrics-port", "0", "--web-port", "0", "--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "key.pem")
    )
    port = metrics_port(server)
    plain = ChatClient(server.port, welcome=False)
    plain.send("plain text")
    server.wait_for(lambda l: f"TLS handshake failed from 127.0.0.1:{plain.port}" in l)
    plain.close()
    assert scrape(port)["geventchat_tls_handshake_failures_total"] == 1
    # The web port speaks TLS too: plain HTTP there is a failed handshake as well.
    from web_helpers import web_port

    with socket.create_connection((HOST, web_port(server)), timeout=5) as http:
        http.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        server.wait_for(lambda l: f"TLS handshake failed from 127.0.0.1:{http.getsockname()[1]}" in l)
    assert scrape(port)["geventchat_tls_handshake_failures_total"] == 2


def test_metrics_only_at_metrics_path(start_server):
    server = start_server("--metrics-port", "0")
    port = metrics_port(server)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=5)
    assert info.value.code == 404
    # Garbage on the metrics port costs the chat nothing.
    junk = socket.create_connection((HOST, port))
    junk.sendall(b"\x00\x01not http at all\r\n\r\n")
    junk.close()
    assert scrape(port)["geventchat_clients_connected"] == 0


def test_metrics_off_by_default(server):
    assert not any("Metrics at" in line for line in server.stdout_lines())


def test_metrics_port_in_use():
    blocker = socket.socket()
    try:
        blocker.bind((HOST, 0))
        blocker.listen(1)
        taken = blocker.getsockname()[1]
        result = run_server_command("--host", HOST, "--port", "0", "--metrics-port", str(taken))
    finally:
        blocker.close()
    assert result.returncode == 1
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and str(taken) in err[0] and "in use" in err[0], err
    assert "Server listening" not in result.stdout


def test_stats_command_names_rooms_and_counts(server, clients):
    a, b = join_all(clients, server, 2)
    b.send("/join #dev")
    b.expect("*** You are now in #dev")
    a.send("/stats")
    lines = a.sync()
    assert lines[-3:] == ["*** 2 connected in 2 rooms", "*** #dev (1)", "*** lobby (1)"], lines


def test_idle_timeouts_are_counted(start_server, clients):
    server = start_server("--metrics-port", "0", "--idle-timeout", "1")
    port = metrics_port(server)
    silent = clients(server)
    server.wait_for_text(f"Client 127.0.0.1:{silent.port} disconnected (idle timeout)", timeout=6)
    samples = wait_metric(port, "geventchat_idle_timeouts_total", lambda v: v == 1)
    assert samples["geventchat_clients_connected"] == 0
