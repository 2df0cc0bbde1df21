"""TLS (contract section 7): the server's --certfile/--keyfile, the client's --tls/--cafile.

Certificates are made at test time by trustme (a throwaway CA); nothing is read from the
system. Real server and client processes on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import datetime
import logging
import re
import socket
import ssl
import subprocess
import sys
import time

import gevent
import pytest
import trustme
from conftest import HOST, ROOT, ChatClient, Closed, run_server_command
from test_client import PipeClient

pytestmark = pytest.mark.timeout(60)

FAILED_RE = r"TLS handshake failed from 127\.0\.0\.1:{port} \(.+\)"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pki(ca, tmp_path_factory):
    """Files: the CA, a good server certificate and key, and bad ones."""
    d = tmp_path_factory.mktemp("pki")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    good = ca.issue_cert("127.0.0.1", "localhost")
    good.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    good.private_key_pem.write_to_path(str(d / "key.pem"))
    now = datetime.datetime.now(datetime.timezone.utc)
    expired = ca.issue_cert(
        "127.0.0.1", "localhost", not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1)
    )
    expired.cert_chain_pems[0].write_to_path(str(d / "expired.pem"))
    expired.private_key_pem.write_to_path(str(d / "expired-key.pem"))
    other = ca.issue_cert("chat.example.org")
    other.cert_chain_pems[0].write_to_path(str(d / "other.pem"))
    other.private_key_pem.write_to_path(str(d / "other-key.pem"))
    return d


@pytest.fixture
def tls_server(start_server, pki):
    def start(*flags: str, cert: str = "cert.pem", key: str = "key.pem"):
        return start_server("--certfile", str(pki / cert), "--keyfile", str(pki / key), *flags)

    return start


def tls_client(port: int, pki, **kwargs) -> ChatClient:
    """A ChatClient over a verified TLS connection (the raw ssl socket client)."""
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    sock = context.wrap_socket(socket.socket(socket.AF_INET, socket.SOCK_STREAM), server_hostname="127.0.0.1")
    return ChatClient(port, sock=sock, **kwargs)


def run_client(port: int, stdin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geventchat.client", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=ROOT,
        input=stdin.encode(),
        capture_output=True,
        timeout=20,
    )


# --------------------------------------------------------------------------- chatting


def test_tls_chat_between_the_client_and_a_raw_tls_socket(tls_server, pki):
    server = tls_server()
    raw = tls_client(server.port, pki)
    pipe = PipeClient(server.port, "--cafile", str(pki / "ca.pem"), "--nick", "alice")
    try:
        pipe.expect(r"Connected to chat server at 127\.0\.0\.1:\d+\. Type 'exit' to leave\.")
        pipe.expect(r"\*\*\* Welcome, \S+! You are in lobby\. Type /help for commands\.")
        pipe.expect(r"\*\*\* You are now known as alice")
        raw.until(lambda l: l == "*** alice joined lobby" or l.endswith(" is now known as alice"))
        pipe.write("hello over TLS\n")
        raw.until(lambda l: l == "alice: hello over TLS")
        raw.send("hi alice", "é ünïcode ✓")
        pipe.expect(re.escape(f"{raw.nick}: hi alice"))
        pipe.expect(re.escape(f"{raw.nick}: é ünïcode ✓"))
        # Something bigger than one TLS record (16 KiB) each way, in order.
        big = [f"{i:04d} " + "b" * 3000 for i in range(20)]
        raw.send(*big)
        for text in big:
            pipe.expect(re.escape(f"{raw.nick}: {text}"))
        pipe.write("".join(f"{text}\n" for text in big))
        assert raw.lines(20) == [f"alice: {text}" for text in big]
        pipe.write("exit\n")
        status, lines, err = pipe.finish()
        assert status == 0, err
        assert lines[-1] == "Disconnected from server"
        raw.until(lambda l: l == "*** alice quit")
    finally:
        pipe.kill()
        raw.close()
    assert server.count_text("alice: hello over TLS") == 1


def test_plain_client_on_the_tls_port(tls_server, pki):
    server = tls_server()
    a = tls_client(server.port, pki)
    b = tls_client(server.port, pki)
    a.expect(f"*** {b.nick} joined lobby")
    # Plain text on the TLS port: closed, one console line, nobody else notices.
    plain = ChatClient(server.port, welcome=False)
    plain.send("hello, is this thing on?")
    with pytest.raises((Closed, AssertionError, OSError)):
        plain.line(timeout=5)
    plain.close()
    line = server.wait_for(lambda l: re.search(FAILED_RE.format(port=plain.port), l) is not None)
    assert not re.search(r"Traceback|Error:", line)
    # One that says nothing (its handshake would time out) does not hold anyone up.
    silent = ChatClient(server.port, welcome=False)
    vanisher = ChatClient(server.port, welcome=False)
    vanisher.close()
    try:
        started = time.monotonic()
        a.send("still fine")
        b.expect(f"{a.nick}: still fine")
        assert time.monotonic() - started < 2.0
        a.expect_nothing()
        b.expect_nothing()
        server.wait_for(lambda l: re.search(FAILED_RE.format(port=vanisher.port), l) is not None)
    finally:
        silent.close()
    # Each failure is exactly one line; no traceback anywhere.
    for port in (plain.port, vanisher.port):
        assert sum(f":{port}" in l for l in server.stdout_lines()) == 1, server.stdout_lines()
    assert not any("Traceback" in l for l in server.stdout_lines() + server.stderr_lines())
    c = tls_client(server.port, pki)  # and it still accepts TLS clients
    a.expect(f"*** {c.nick} joined lobby")


def test_tls_refusal_is_said_over_tls(tls_server, pki):
    server = tls_server("--max-per-ip", "1")
    a = tls_client(server.port, pki)
    extra = tls_client(server.port, pki, welcome=False)
    assert extra.read_to_eof() == ["*** Error: too many connections from your address"]
    a.send("/stats")
    assert a.sync()[0] == "*** 1 connected in 1 room"


def test_stop_with_a_handshake_pending(tls_server):
    server = tls_server()
    silent = socket.create_connection((HOST, server.port))
    try:
        time.sleep(0.2)
        started = time.monotonic()
        assert server.stop(timeout=10) == 0
        assert time.monotonic() - started < 3.0
    finally:
        silent.close()


# ------------------------------------------------------------------ the client refuses


def test_expired_certificate_is_refused_by_the_client(tls_server, pki):
    server = tls_server(cert="expired.pem", key="expired-key.pem")
    result = run_client(server.port, "hello\n", "--cafile", str(pki / "ca.pem"))
    assert result.returncode == 2
    err = result.stderr.decode().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"Error: TLS handshake with 127.0.0.1:{server.port} failed: certificate verify failed")
    assert "expired" in err[0]
    assert result.stdout == b""
    server.wait_for(lambda l: "TLS handshake failed from 127.0.0.1:" in l)


def test_wrong_host_certificate_is_refused_by_the_client(tls_server, pki):
    server = tls_server(cert="other.pem", key="other-key.pem")
    result = run_client(server.port, "hello\n", "--cafile", str(pki / "ca.pem"))
    assert result.returncode == 2
    err = result.stderr.decode().splitlines()
    assert len(err) == 1, err
    assert "certificate verify failed" in err[0] and "mismatch" in err[0], err
    assert result.stdout == b""


def test_unknown_ca_is_refused_with_system_trust(tls_server):
    server = tls_server()
    result = run_client(server.port, "hello\n", "--tls")
    assert result.returncode == 2
    err = result.stderr.decode().splitlines()
    assert len(err) == 1 and "certificate verify failed" in err[0], err


def test_client_bad_cafile(tls_server, tmp_path):
    missing = run_client(1, "", "--cafile", str(tmp_path / "nope.pem"))
    assert missing.returncode == 2
    assert missing.stderr.decode().splitlines() == [f"Error: --cafile {tmp_path / 'nope.pem'}: no such file"]
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    bad = run_client(1, "", "--cafile", str(junk))
    assert bad.returncode == 2
    assert len(bad.stderr.decode().splitlines()) == 1


def test_tls_client_against_a_plain_server(start_server, pki):
    server = start_server()
    result = run_client(server.port, "hello\n", "--cafile", str(pki / "ca.pem"))
    assert result.returncode == 2
    err = result.stderr.decode().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: TLS handshake with"), err


# --------------------------------------------------------------- bad server settings


@pytest.mark.parametrize(
    "files, says",
    [
        (("missing.pem", "key.pem"), "no such file"),
        (("key.pem", "key.pem"), "not a PEM certificate"),
        (("cert.pem", "other-key.pem"), "does not match"),
        (("cert.pem", None), "no private key"),
    ],
)
def test_bad_certificate_files(pki, files, says):
    cert, key = files
    flags = ["--certfile", str(pki / cert)] + (["--keyfile", str(pki / key)] if key else [])
    result = run_server_command("--host", HOST, "--port", "0", *flags)
    assert result.returncode == 1
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: cannot use TLS"), err
    assert says in err[0], err
    assert "Traceback" not in result.stderr and "Server listening" not in result.stdout


def test_keyfile_needs_certfile(pki):
    result = run_server_command("--keyfile", str(pki / "key.pem"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("--keyfile needs --certfile")


# ------------------------------------------------------------------ handshake (unit)


def test_handshake_times_out_and_never_raises(pki):
    from geventchat.doors import tls

    context = tls.server_context(str(pki / "cert.pem"), str(pki / "key.pem"))
    from gevent import socket as gsocket

    ours, theirs = gsocket.socketpair()
    started = time.monotonic()
    sock, reason = tls.handshake(ours, context, 0.2)
    assert sock is None and reason == "timed out"
    assert 0.15 < time.monotonic() - started < 2
    theirs.close()
    ours, theirs = gsocket.socketpair()
    theirs.sendall(b"GET / HTTP/1.0\r\n\r\n")
    sock, reason = tls.handshake(ours, context, 2)
    assert sock is None and reason
    theirs.close()
    gevent.sleep(0)


def tls_connection(pki, buffers: int | None = None):
    """A server-side line connection over TLS on a socket pair, serving in a greenlet, and
    its client's TLS socket (gevent's own, in this process): (session, client, hub, reader)."""
    from gevent import socket as gsocket
    from gevent import ssl as gssl

    from geventchat.chat.hub import Hub
    from geventchat.core.config import Settings
    from geventchat.doors import tls
    from geventchat.doors.connection import line_connection

    server_context = tls.server_context(str(pki / "cert.pem"), str(pki / "key.pem"))
    client_context = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(cafile=str(pki / "ca.pem"))
    ours, theirs = gsocket.socketpair()
    if buffers:
        ours.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_SNDBUF, buffers)
        theirs.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_RCVBUF, buffers)
    client = client_context.wrap_socket(theirs, server_hostname="127.0.0.1", do_handshake_on_connect=False)
    client_handshake = gevent.spawn(client.do_handshake)
    sock, reason = tls.handshake(ours, server_context, 5)
    assert sock is not None, reason
    client_handshake.get(timeout=5)
    hub = Hub()
    connection = line_connection(sock, ("127.0.0.1", 40000), hub, Settings())
    reader = gevent.spawn(connection.serve)
    gevent.sleep(0.1)  # the reader waits for input
    assert hub.room_counts() == [("lobby", 1)]
    return connection.session, client, hub, reader


def disconnect_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]


@pytest.mark.parametrize("drop_first", [False, True])
def test_tls_reader_woken_as_its_connection_is_dropped_ends_cleanly(pki, caplog, drop_first):
    """A drop (line timeout, send queue, a reset seen by the writer) that closes a TLS
    socket in the loop turn that wakes its reader for input: gevent's SSLSocket then raises
    ValueError, not OSError. The connection must end as a plain one does: one
    "disconnected" line, out of the hub, no traceback (the TLS soak found this)."""
    caplog.set_level(logging.INFO, logger="geventchat")
    session, client, hub, reader = tls_connection(pki)
    try:
        # Both in the next loop turn: the input wakes the reader, the timer drops it.
        if drop_first:
            gevent.spawn_later(0, session.drop, "line timeout")
            client.sendall(b"hello\n")
        else:
            client.sendall(b"hello\n")
            gevent.spawn_later(0, session.drop, "line timeout")
        reader.join(timeout=5)
        assert reader.dead
        assert reader.exception is None, repr(reader.exception)
        assert hub.room_counts() == []
        assert disconnect_lines(caplog) == ["Client 127.0.0.1:40000 disconnected (line timeout)"]
    finally:
        reader.kill()
        client.close()


def test_tls_writer_woken_as_its_connection_is_dropped_ends_cleanly(pki, caplog):
    """The writer's side of the same: a lagging TLS client (the writer greenlet waits for
    room) dropped in the loop turn that gives the writer room: gevent's SSLSocket.send then
    raises AttributeError. The writer ends quietly, the connection as a plain one does."""
    caplog.set_level(logging.INFO, logger="geventchat")
    session, client, hub, reader = tls_connection(pki, buffers=4096)
    watcher = gevent.get_hub().loop.io(session.sock.fileno(), 2)  # 2: writable
    try:
        for _ in range(800):
            session.deliver(b"x" * 1000 + b"\n")
        gevent.sleep(0.2)
        writer = session._writer
        assert writer is not None, "the writer should be waiting for room"
        # The drop runs first in the loop turn that wakes the writer: a watcher of higher
        # priority on the same descriptor.
        watcher.priority = 1

        def drop() -> None:
            watcher.stop()
            session.drop("send queue exceeded")

        watcher.start(drop)
        client.settimeout(2)
        for _ in range(1000):  # read: room for the writer, in the turn of the drop
            try:
                if not client.recv(65536):
                    break
            except OSError:
                break
        writer.join(timeout=5)
        reader.join(timeout=5)
        assert writer.dead and reader.dead
        assert writer.exception is None, repr(writer.exception)
        assert reader.exception is None, repr(reader.exception)
        assert hub.room_counts() == []
        assert disconnect_lines(caplog) == ["Client 127.0.0.1:40000 disconnected (send queue exceeded)"]
    finally:
        watcher.close()
        reader.kill()
        client.close()


# ------------------------------------------------------------------- terminal mode


def test_tls_in_a_real_terminal(tls_server, pki):
    """The terminal client does its TLS handshake in asyncio: chat works, a bad
    certificate is one line and exit status 2 (skipped without tmux)."""
    from test_client_tty import TMUX, Tmux, client_command

    if TMUX is None:
        pytest.skip("tmux is not installed")
    server = tls_server()
    other = tls_client(server.port, pki)
    term = Tmux(client_command(server.port, "--cafile", str(pki / "ca.pem"), "--nick", "termtls"))
    try:
        term.wait_screen(lambda lines: term.input_line(lines) == "[lobby] termtls>", "the prompt")
        assert term.screen()[0] == f"Connected to chat server at 127.0.0.1:{server.port}. Type 'exit' to leave."
        other.until(lambda l: l.endswith("termtls"))
        other.send("hello terminal")
        term.wait_screen(lambda lines: any(l.endswith(f"{other.nick}: hello terminal") for l in lines), "the message")
        term.keys("hello raw")
        term.press("Enter")
        other.until(lambda l: l == "termtls: hello raw")
        term.wait_screen(lambda lines: term.input_line(lines) == "[lobby] termtls>", "an empty input line after Enter")
        term.press("C-d")
        assert "Disconnected from server" in term.wait_text("[exit 0]")
    finally:
        term.kill()
        other.close()
    bad = tls_server(cert="other.pem", key="other-key.pem")
    term = Tmux(client_command(bad.port, "--cafile", str(pki / "ca.pem")))
    try:
        lines = term.wait_text("[exit 2]")
        text = [l for l in lines if l.strip()]
        shown = "".join(text[: text.index("[exit 2]")])  # the one line, wrapped at the width
        assert shown.startswith(f"Error: TLS handshake with 127.0.0.1:{bad.port} failed: certificate verify failed"), text
        assert "mismatch" in shown and "Connected" not in shown and "Traceback" not in shown, text
    finally:
        term.kill()


def test_slowloris_over_tls_is_cut(tls_server, pki):
    """The line timeout sees TLS connections too (their readers never park)."""
    server = tls_server("--line-timeout", "1", "--idle-timeout", "30")
    slow = tls_client(server.port, pki)
    other = tls_client(server.port, pki)
    slow.expect(f"*** {other.nick} joined lobby")
    slow.send_raw(b"never finished")
    server.wait_for_text(f"Client 127.0.0.1:{slow.port} disconnected (line timeout)", timeout=6)
    other.expect(f"*** {slow.nick} quit (line timeout)")
    other.send("/stats")
    assert other.sync()[0] == "*** 1 connected in 1 room"
