"""The not-encrypted warning (contract section 11) over real sockets from an address that
is not loopback, without leaving the machine: the server and its client run in a network
namespace of their own (``unshare -n``) whose only interface, lo, also carries 10.200.0.1.
Needs root (or user namespaces) and iproute2; skipped otherwise."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

ADDRESS = "10.200.0.1"

# Runs inside the namespace: a server on ADDRESS (plain, or TLS with the given files), one
# client from ADDRESS; prints what the client received, as JSON; stops the server by PID.
HELPER = textwrap.dedent(
    """
    import json, re, socket, ssl, subprocess, sys, time
    address, db, cert, key, ca = sys.argv[1:6]
    args = [sys.executable, "-m", "geventchat.server", "--host", address, "--port", "0", "--db", db, "--no-presence"]
    if cert:
        args += ["--certfile", cert, "--keyfile", key]
    def die_with_parent():
        import ctypes, signal
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlive this helper
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    try:
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            line = server.stdout.readline().decode()
            m = re.search(r"Server listening on \\S+:(\\d+)", line)
            if m:
                port = int(m.group(1))
        sock = socket.socket()
        sock.bind((address, 0))
        sock.settimeout(10)
        sock.connect((address, port))
        if cert:
            sock = ssl.create_default_context(cafile=ca).wrap_socket(sock, server_hostname=address)
        lines = [
            "/nick quinn", "/register correct-horse-9", "/password correct-horse-9 battery-staple-7",
            "/logout", "/login quinn battery-staple-7", "/login quinn wrong-pass-1", "/quit",
        ]
        sock.sendall("".join(line + "\\n" for line in lines).encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        print(json.dumps(data.decode().splitlines()))
    finally:
        server.terminate()
        server.wait(10)
    """
)


def run_in_namespace(tmp_path, tls: bool) -> list[str]:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare and ip (util-linux, iproute2) are needed for a private network namespace")
    cert = key = ca = ""
    if tls:
        trustme = pytest.importorskip("trustme")
        authority = trustme.CA()
        issued = authority.issue_cert(ADDRESS)
        cert, key, ca = (str(tmp_path / name) for name in ("cert.pem", "key.pem", "ca.pem"))
        issued.cert_chain_pems[0].write_to_path(cert)
        issued.private_key_pem.write_to_path(key)
        authority.cert_pem.write_to_path(ca)
    script = f'ip link set lo up && ip addr add {ADDRESS}/32 dev lo && exec "$0" -c "$1" "$2" "$3" "$4" "$5" "$6"'
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip("cannot make a network namespace here: " + probe.stderr.decode().strip())
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", script, sys.executable, HELPER, ADDRESS, str(tmp_path / "chat.db"), cert, key, ca],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


WARNING = "*** Warning: this connection is not encrypted"


def test_plain_tcp_from_an_address_that_is_not_loopback_is_warned(tmp_path):
    lines = run_in_namespace(tmp_path, tls=False)
    assert lines[1:] == [
        "*** You are now known as quinn",
        "*** quinn is now registered and you are logged in",
        WARNING,
        "*** Password changed",
        WARNING,
        "*** You are logged out",
        "*** You are now logged in as quinn",
        WARNING,
        "*** Error: wrong nickname or password",
    ], lines


def test_tls_from_an_address_that_is_not_loopback_is_not_warned(tmp_path):
    lines = run_in_namespace(tmp_path, tls=True)
    assert lines[1:] == [
        "*** You are now known as quinn",
        "*** quinn is now registered and you are logged in",
        "*** Password changed",
        "*** You are logged out",
        "*** You are now logged in as quinn",
        "*** Error: wrong nickname or password",
    ], lines
