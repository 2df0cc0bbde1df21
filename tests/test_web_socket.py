"""The web listener of a real server, driven by a plain WebSocket client (no browser):
the same chat as TCP, the same limits, origins, bad input and shutdown."""

from __future__ import annotations

import socket
import time

import pytest
from conftest import HOST
from web_helpers import Refused, WsClient, web_port


@pytest.fixture
def web_server(start_server):
    server = start_server("--web-port", "0")
    server.web_port = web_port(server)
    return server


def http(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(raw)
        got = b""
        while True:
            try:
                data = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not data:
                break
            got += data
        return got


def test_web_port_is_off_unless_asked(server):
    assert not any("Web client" in line for line in server.stdout_lines())


def test_the_page_and_its_assets_are_served(web_server):
    page = http(web_server.web_port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert page.startswith(b"HTTP/1.1 200 ")
    assert b"<!doctype html>" in page.lower()
    for asset in (b"/static/app.js", b"/static/style.css"):
        reply = http(web_server.web_port, b"GET " + asset + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 "), asset
        assert asset in page  # the page loads it from this same server
    assert b"http://" not in page and b"https://" not in page  # nothing from elsewhere


def test_browser_and_terminal_users_chat_in_one_room(web_server, clients):
    tcp = clients(web_server)
    web = WsClient(web_server.web_port)
    try:
        tcp.expect(f"*** {web.nick} joined lobby")
        web.send("hello from the web")
        tcp.expect(f"{web.nick}: hello from the web")
        tcp.send("hello from the terminal")
        web.expect(f"{tcp.nick}: hello from the terminal")
        tcp.send("one", "two", "three")  # relayed as one piece: still one frame per line
        web.expect(f"{tcp.nick}: one", f"{tcp.nick}: two", f"{tcp.nick}: three")
        web.send("/nick webby", "/me waves", f"/msg {tcp.nick} psst", "/who")
        web.expect("*** You are now known as webby", f"*** To {tcp.nick}: psst", f"*** Members of lobby (2): {tcp.nick} webby")
        tcp.expect(f"*** {web.nick} is now known as webby", "* webby waves", "*webby* psst")
        web.send("exit")
        assert web.until_closed() == []
        assert web.closed is not None and web.closed.code == 1000
        tcp.expect("*** webby quit")
        web_server.wait_for_text(f"Client 127.0.0.1:{web.port} disconnected")
    finally:
        web.close()


def test_a_frame_longer_than_max_line_gets_an_error_and_the_connection_stays(start_server, clients):
    server = start_server("--web-port", "0", "--max-line", "100", "--no-presence")
    tcp = clients(server)
    web = WsClient(web_port(server))
    try:
        web.send("a" * 101, "b" * 100)
        assert web.line().startswith("*** Error: line too long")
        tcp.expect(f"{web.nick}: " + "b" * 100)
    finally:
        web.close()


def test_a_web_client_silent_for_a_while_stays_connected(start_server, clients):
    """A silent TCP reader parks after limits.PARK_AFTER (2 s); a WebSocket one must not:
    its socket belongs to the web listener's handler, which closes it when it returns."""
    server = start_server("--web-port", "0", "--max-per-ip", "2")
    tcp = clients(server)
    web = WsClient(web_port(server))
    try:
        tcp.expect(f"*** {web.nick} joined lobby")
        time.sleep(3.0)  # silent past PARK_AFTER
        web.send("still here")
        tcp.expect(f"{web.nick}: still here")
        tcp.send("and you?")
        web.expect(f"{tcp.nick}: and you?")
        # Still counted against --max-per-ip: a third connection from here is refused.
        third = clients(server, welcome=False)
        assert third.read_to_eof() == ["*** Error: too many connections from your address"]
        tcp.expect_nothing()  # no quit was announced for the web client
        assert not server.count_text(f"Client 127.0.0.1:{web.port} disconnected")
    finally:
        web.close()
    server.wait_for_text(f"Client 127.0.0.1:{web.port} disconnected")
    tcp.expect(f"*** {web.nick} quit")
    assert not any("Traceback" in line for line in server.stdout_lines() + server.stderr_lines())


def test_a_cross_origin_handshake_is_refused_with_403_and_a_log_line(start_server):
    server = start_server("--web-port", "0", "--web-origins", "https://front.example")
    port = web_port(server)
    with pytest.raises(Refused) as refused:
        WsClient(port, origin="http://evil.example")
    assert refused.value.status == 403 and b" 101 " not in refused.value.raw
    server.wait_for(lambda l: "Refused WebSocket from 127.0.0.1:" in l and "evil.example" in l)
    WsClient(port, origin="https://front.example").close()  # listed
    WsClient(port).close()  # same origin


def test_bad_http_and_bad_frames_get_a_clean_close_and_a_log_line(web_server, clients):
    tcp = clients(web_server)
    reply = http(web_server.web_port, b"\x00\x01garbage\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    web_server.wait_for(lambda l: l.startswith("Bad HTTP request from 127.0.0.1:"))
    web = WsClient(web_server.web_port)
    tcp.expect(f"*** {web.nick} joined lobby")
    web.send_raw(b"\x81\x05hello")  # not masked
    assert web.until_closed() == []
    assert web.closed is not None and web.closed.code == 1002
    web.close()
    web_server.wait_for(lambda l: l.startswith(f"Client 127.0.0.1:{web.port} disconnected (bad WebSocket data"))
    tcp.until(lambda l: l.startswith(f"*** {web.nick} quit"))
    tcp.send("still serving")
    tcp.expect_nothing()
    assert not any("Traceback" in line for line in web_server.stdout_lines() + web_server.stderr_lines())


def test_a_stop_tells_web_clients_and_closes_with_going_away(web_server):
    web = WsClient(web_server.web_port)
    web_server.signal(15)
    assert web.until_closed() == ["*** Server shutting down"]
    assert web.closed is not None and web.closed.code == 1001
    web.close()
    assert web_server.wait(10) == 0


def test_max_clients_counts_web_clients_too(start_server, clients):
    server = start_server("--web-port", "0", "--max-clients", "1")
    port = web_port(server)
    first = WsClient(port)
    try:
        second = WsClient(port, welcome=False)
        assert second.until_closed() == ["*** Error: server full"]
        second.close()
        full = clients(server, welcome=False)
        assert full.read_to_eof() == ["*** Error: server full"]
    finally:
        first.close()


def test_max_per_ip_counts_web_and_tcp_connections_together(start_server, clients):
    server = start_server("--web-port", "0", "--max-per-ip", "2")
    port = web_port(server)
    tcp = clients(server)
    web = WsClient(port)
    try:
        third = WsClient(port, welcome=False)
        assert third.until_closed() == ["*** Error: too many connections from your address"]
        third.close()
    finally:
        web.close()
    tcp.until(lambda l: l.startswith(f"*** {web.nick} quit"))
    WsClient(port).close()  # the place is free again


def test_web_port_in_use_is_one_line_and_exit_1(web_server):
    from conftest import run_server_command

    done = run_server_command("--port", "0", "--web-port", str(web_server.web_port))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{web_server.web_port}: port {web_server.web_port} is already in use"
    ]


def test_an_idle_http_connection_does_not_delay_the_stop(web_server):
    # A served request first: the server is past its startup (signal handlers set).
    assert http(web_server.web_port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
    idle = socket.create_connection((HOST, web_server.web_port))
    try:
        start = time.monotonic()
        assert web_server.stop() == 0
        assert time.monotonic() - start < 3
    finally:
        idle.close()


def test_bad_web_origins_is_a_usage_error():
    from conftest import run_server_command

    done = run_server_command("--port", "0", "--web-port", "0", "--web-origins", "example.com")
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1]
        == "geventchat-server: error: argument --web-origins: not an origin (scheme://host[:port]): 'example.com'"
    )


def test_with_tls_the_page_is_https_and_the_socket_wss(start_server, clients, tmp_path):
    import ssl

    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    server = start_server("--web-port", "0", "--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "key.pem"))
    line = server.wait_for(lambda l: "Web client on " in l)
    assert line.endswith(f"Web client on https://127.0.0.1:{web_port(server)}/")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with context.wrap_socket(socket.create_connection((HOST, web_port(server))), server_hostname=HOST) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert tls.recv(100).startswith(b"HTTP/1.1 200 ")
    web = WsClient(web_port(server), tls=context)
    try:
        web.send("/who")
        assert web.line().startswith("*** Members of lobby (1): ")
        with pytest.raises(Refused):  # the page's origin is https now
            WsClient(web_port(server), tls=context, origin=f"http://127.0.0.1:{web_port(server)}")
    finally:
        web.close()
    # Plain HTTP on the TLS web port: one line, nothing else disturbed.
    assert not http(web_port(server), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP")
    server.wait_for(lambda l: l.startswith("TLS handshake failed from 127.0.0.1:"))


def test_a_frame_left_unfinished_meets_the_line_timeout(start_server, clients):
    server = start_server("--web-port", "0", "--line-timeout", "1")
    watcher = clients(server)
    web = WsClient(web_port(server))
    watcher.expect(f"*** {web.nick} joined lobby")
    web.send_raw(b"\x81")  # the first byte of a frame, and nothing more
    server.wait_for_text(f"Client 127.0.0.1:{web.port} disconnected (line timeout)", timeout=6)
    watcher.expect(f"*** {web.nick} quit (line timeout)")
    web.close()


def test_a_web_client_that_does_not_read_is_dropped_at_the_send_queue_limit(start_server, clients):
    server = start_server("--web-port", "0", "--max-sendq", "65536", "--no-presence", "--quiet")
    sender = clients(server)
    stuck = WsClient(web_port(server))
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        line = "x" * 1000
        deadline = time.monotonic() + 20
        while not server.count_text(f"Client 127.0.0.1:{stuck.port} disconnected (send queue exceeded)"):
            assert time.monotonic() < deadline, "the stuck web client was never dropped"
            sender.send(*[line] * 200)
            sender.sync()  # the sender itself is never slowed down or dropped
    finally:
        stuck.close()


def test_rate_applies_to_web_clients(start_server, clients):
    server = start_server("--web-port", "0", "--rate", "10", "--burst", "1", "--no-presence", "--quiet")
    reader = clients(server)
    web = WsClient(web_port(server))
    try:
        start = time.monotonic()
        web.send(*[f"line {i}" for i in range(11)])
        reader.expect(*[f"{web.nick}: line {i}" for i in range(11)], timeout=10)
        assert time.monotonic() - start >= 0.9  # ten lines past the burst at 10 per second
    finally:
        web.close()


def test_a_web_client_that_reads_late_gets_every_line_in_whole_frames(start_server, clients):
    """Lines that waited because the kernel's buffer was full (a browser that reads
    slowly) go out as the frames they were encoded into: the rest of a half-sent frame is
    never framed a second time (that used to break the stream)."""
    server = start_server("--web-port", "0", "--no-presence", "--quiet", "--max-sendq", "8000000")
    sender = clients(server)
    late = WsClient(web_port(server))
    try:
        lines = [f"{i:04d} " + "x" * 995 for i in range(4000)]  # 4 MB: more than the kernel holds
        for start in range(0, len(lines), 50):
            sender.send(*lines[start : start + 50])
        sender.sync()  # the server has read them all, and queued them for the late reader
        got = [late.line() for _ in lines]
        assert got == [f"{sender.nick}: {line}" for line in lines]
    finally:
        late.close()
