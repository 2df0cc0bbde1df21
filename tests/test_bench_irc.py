"""The benchmark's IRC mode (python -m bench --protocol irc) and its reference IRC servers.

The checker is fed the bytes real IRC servers send (prefixes, CRLF, PINGs mid-run); whole
runs go against real ngircd and InspIRCd (Debian packages, started by the bench with the
configs it writes) and against geventchat's IRC door once the server has --irc-port.
Without ngircd or inspircd those runs are skipped, unless GEVENTCHAT_REQUIRE_IRC is set
(.ci/run sets it): then a missing server fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from bench.ircservers import IrcConfig, login_lines
from bench.worker import Plan, Worker, format_message, irc_command, irc_nick


def require(binary: str) -> None:
    if shutil.which(binary) is None and not os.path.exists(f"/usr/sbin/{binary}"):
        if os.environ.get("GEVENTCHAT_REQUIRE_IRC"):
            pytest.fail(f"{binary} is not installed (GEVENTCHAT_REQUIRE_IRC is set)")
        pytest.skip(f"{binary} is not installed (Debian: apt-get install {binary})")


def geventchat_has_irc_door() -> bool:
    proc = subprocess.run([sys.executable, "-m", "geventchat.server", "--help"], capture_output=True, text=True, timeout=30)
    return "--irc-port" in proc.stdout


def run_bench(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "--no-progress", "--protocol", "irc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ----------------------------------------------------------------------------- the checker


def make_worker(senders: int = 3, messages: int = 40, clients: int = 4, login: str = "") -> Worker:
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
        protocol="irc",
        irc_login=login,
    )
    return Worker(plan, None)


def privmsgs(pairs, host: bytes = b"127.0.0.1") -> bytes:
    """What a server sends a receiver: each sender's PRIVMSG to #bench, with its prefix."""
    out = []
    for s, q in pairs:
        text = format_message(s, q, 0, b"x" * 39, mark=b"=").rstrip(b"\n")
        out.append(b":%s!~%s@%s PRIVMSG #bench :%s\r\n" % (irc_nick(s), irc_nick(s), host, text))
    return b"".join(out)


def connected_pair(w: Worker, idx: int) -> socket.socket:
    """Give client idx a real socket; return the server's end of it."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    c = w.clients[idx]
    c.sock, c.fd = ours, ours.fileno()
    theirs.settimeout(2)
    return theirs


def read_available(sock: socket.socket) -> bytes:
    sock.settimeout(0.2)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    return data


def test_irc_command_skips_tags_and_source():
    assert irc_command(b"@time=x :srv 001 b00001 :Welcome") == (b"001", b"b00001 :Welcome")
    assert irc_command(b"PING :srv.example") == (b"PING", b":srv.example")
    assert irc_command(b":srv ping x") == (b"PING", b"x")


def test_handshake_joins_after_001_with_login_lines_and_is_done_at_366():
    w = make_worker(login="OPER a b\r\nMODE {nick} +F\r\n")
    server = connected_pair(w, 3)
    c = w.clients[3]
    welcome = b":srv 001 b00003 :Welcome\r\n:srv 005 b00003 CHANTYPES=# PREFIX=(ov)@+ :are supported\r\nPING :tok1\r\n"
    w.on_data(c, welcome[:17])
    w.on_data(c, welcome[17:])
    assert read_available(server) == b"OPER a b\r\nMODE b00003 +F\r\nJOIN #bench\r\nPONG :tok1\r\n"
    assert not c.joined
    w.on_data(c, b":b00003!~b@h JOIN :#bench\r\n:srv 353 b00003 = #bench :@b00003 b00001\r\n")
    assert not c.joined  # the NAMES list's "=" is not taken for a message
    w.on_data(c, b":srv 366 b00003 #bench :End of /NAMES list.\r\n")
    assert c.joined and not c.dead
    assert (w.stats.unexpected, c.got) == (0, 0)


def test_a_refused_registration_names_the_servers_line():
    w = make_worker()
    connected_pair(w, 1)
    w.on_data(w.clients[1], b":srv 433 * b00001 :Nickname is already in use\r\n")
    assert w.clients[1].dead == ":srv 433 * b00001 :Nickname is already in use"


@pytest.mark.parametrize("step", [1, 37, 100_000])  # the per-line path and the numpy path
def test_checker_accepts_privmsgs_in_order_in_any_chunking_and_answers_pings(step):
    w = make_worker()
    server = connected_pair(w, 3)
    receiver = w.clients[3]
    receiver.joined = True
    stream = privmsgs([(s, q) for q in range(40) for s in range(3)])
    ping_at = len(stream) // 2
    ping_at = stream.index(b"\r\n", ping_at) + 2
    # mid-run a PING, and other users' lines (a JOIN, a NOTICE) between the chat lines
    data = stream[:ping_at] + b"PING :srv.example\r\n:x!y@z JOIN :#bench\r\n:srv NOTICE b00003 :hi\r\n" + stream[ping_at:]
    for i in range(0, len(data), step):
        w.on_data(receiver, data[i : i + step])
    assert receiver.got == receiver.expected == 3 * 40
    assert (w.stats.duplicates, w.stats.reordered, w.stats.unexpected) == (0, 0, 0)
    assert read_available(server) == b"PONG :srv.example\r\n"


def test_checker_finds_loss_duplicates_and_garbled_privmsgs():
    w = make_worker(senders=2, messages=20, clients=3)
    receiver = w.clients[2]
    receiver.joined = True
    order = [(s, q) for q in range(20) for s in range(2)]
    order.remove((1, 7))  # lost
    order.insert(30, (0, 3))  # duplicated later
    data = privmsgs(order) + b":b00000!~b@h PRIVMSG #bench :=12x garbled\r\n"
    w.on_data(receiver, data)
    res = w.result(0.0)
    assert receiver.got == 39
    assert w.stats.duplicates == 1
    assert w.stats.unexpected == 1
    assert res["lost"] >= 1


def test_senders_write_privmsgs_with_the_header_after_the_equals_mark():
    w = make_worker(senders=1, messages=3, clients=2)
    server = connected_pair(w, 0)
    w.clients[0].ack = None  # no window watcher: send all three
    w.go = True
    w.pump(w.clients[0])
    sent = read_available(server).split(b"\r\n")[:-1]
    assert len(sent) == 3
    for q, line in enumerate(sent):
        assert re.fullmatch(rb"PRIVMSG #bench :=00000%09d\d{10}x{39}" % q, line), line


# ----------------------------------------------------------------------------- the configs


def test_configs_lift_the_limits_a_load_test_hits(tmp_path):
    ng = IrcConfig("ngircd", "127.0.0.1", 6000, 500)
    insp = IrcConfig("inspircd", "127.0.0.1", 6001, 500)
    try:
        text = open(ng.path).read()
        for setting in ("MaxConnectionsIP = 0", "MaxPenaltyTime = 0", "DNS = no", "Ident = no", "Ports = 6000"):
            assert setting in text
        assert login_lines("ngircd").startswith("OPER ") and "+F" in login_lines("ngircd")
        text = open(insp.path).read()
        for setting in ('fakelag="no"', 'resolvehostnames="no"', 'hardsendq="64M"', 'localmax="10000"', 'port="6001"'):
            assert setting in text
        assert login_lines("inspircd") == ""
    finally:
        ng.cleanup()
        insp.cleanup()
    assert not os.path.exists(ng.dir) and not os.path.exists(insp.dir)


# ----------------------------------------------------------------------------- whole runs

JSON_KEYS = {"expected", "delivered", "lost", "duplicates", "reordered", "deliveries_per_s", "messages_per_s", "latency_ms"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("server", ["ngircd", "inspircd"])
def test_a_short_run_against_a_real_ircd_delivers_exactly(server, tmp_path):
    require(server)
    out = tmp_path / "run.json"
    proc = run_bench("--server", server, "--clients", "12", "--senders", "4", "--messages", "40", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert JSON_KEYS <= set(res)
    assert res["protocol"] == "irc"
    assert res["delivered"] == res["expected"] == 4 * 40 * 11
    assert res["lost"] == res["duplicates"] == res["reordered"] == res["unexpected"] == 0
    assert "OK: every delivery arrived once and in order" in proc.stdout
    assert re.search(r"server CPU s\s+\d", proc.stdout), "the ircd's own PID is measured"


@pytest.mark.timeout(120)
def test_a_short_run_against_geventchats_irc_door_delivers_exactly(tmp_path):
    if not geventchat_has_irc_door():
        pytest.skip("geventchat has no --irc-port yet")
    out = tmp_path / "run.json"
    proc = run_bench("--clients", "12", "--senders", "4", "--messages", "40", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert res["delivered"] == res["expected"] == 4 * 40 * 11
    assert res["lost"] == res["duplicates"] == res["reordered"] == res["unexpected"] == 0


@pytest.mark.timeout(200)
def test_compare_puts_geventchats_door_beside_ngircd_and_inspircd(tmp_path):
    require("ngircd")
    require("inspircd")
    names = ["geventchat", "ngircd", "inspircd"] if geventchat_has_irc_door() else ["ngircd", "inspircd"]
    out = tmp_path / "compare.json"
    proc = run_bench("--compare", "--servers", ",".join(names), "--clients", "6", "--messages", "20", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert [r["server"] for r in res["compare"]] == names
    for r in res["compare"]:
        assert r["delivered"] == r["expected"] == 6 * 20 * 5, r["server"]
    if "geventchat" in names:  # (a run this short may be too short for ratios, and says so)
        assert "geventchat's ratio to each" in proc.stdout or "no ratios: too short to measure" in proc.stdout


def test_servers_that_do_not_speak_the_protocol_are_refused():
    proc = run_bench("--server", "asyncio", "--clients", "2", "--messages", "1")
    assert proc.returncode == 2 and "asyncio does not speak --protocol irc" in proc.stderr
    proc = run_bench("--compare", "--servers", "ngircd,threaded", "--clients", "2", "--messages", "1")
    assert proc.returncode == 2 and "threaded does not speak --protocol irc" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--server", "ngircd", "--clients", "2", "--messages", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "ngircd does not speak --protocol line" in proc.stderr
