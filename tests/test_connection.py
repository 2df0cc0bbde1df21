"""The connection's read and write paths, seen from real sockets."""

import threading


def test_a_burst_from_one_sender_does_not_push_a_live_reader_over_the_send_queue(quiet_server):
    """4 MiB sent in one go (four times the default --max-sendq) reaches a reader that keeps
    reading, complete and in order: the server must flush to the reader while it is still
    taking in the burst, not only after."""
    sender, reader = quiet_server.client(), quiet_server.client()
    count, width = 4096, 1024
    blob = b"".join(b"%06d " % i + b"x" * (width - 8) + b"\n" for i in range(count))
    thread = threading.Thread(target=sender.send_raw, args=(blob,), daemon=True)
    thread.start()
    received = reader.lines(count, timeout=30)
    thread.join(10)
    assert [int(line.split(": ", 1)[1][:6]) for line in received] == list(range(count))
    assert all(line.startswith(f"{sender.nick}: ") for line in received)
    assert quiet_server.count_text("send queue exceeded") == 0


def test_chat_and_commands_in_one_chunk_keep_their_order(server):
    """Chat lines of one chunk go on together, but never across a command between them:
    the rename below must split the lines it stands between."""
    sender, reader = server.client(), server.client()
    sender.expect(f"*** {reader.nick} joined lobby")
    old = sender.nick
    sender.send_raw(b"one\ntwo\n/nick Zed\nthree\n/me waves\nfour\n")
    assert reader.lines(6) == [
        f"{old}: one",
        f"{old}: two",
        f"*** {old} is now known as Zed",
        "Zed: three",
        "* Zed waves",
        "Zed: four",
    ]


# Parking: a connection silent for limits.PARK_AFTER seconds gives up its reader greenlet.
# These tests let clients go silent past that, then check that nothing a user can see
# has changed.

PARKED = 2.6  # seconds: past geventchat.limits.PARK_AFTER (2.0)


def test_parked_connections_still_chat_both_ways_and_in_order(quiet_server):
    import time

    a, b = quiet_server.client(), quiet_server.client()
    time.sleep(PARKED)  # both silent: both parked
    a.send("after a pause", "and another")
    assert b.lines(2) == [f"{a.nick}: after a pause", f"{a.nick}: and another"]
    b.send("/who")
    assert b.line() == f"*** Members of lobby (2): {a.nick} {b.nick}"
    time.sleep(PARKED)  # parked again: each wake-up is a new reader
    b.send(*[f"burst {i}" for i in range(200)])
    assert a.lines(200) == [f"{b.nick}: burst {i}" for i in range(200)]
    a.send("exit")
    assert a.read_to_eof() == []
    quiet_server.wait_for_text(f"Client 127.0.0.1:{a.port} disconnected")


def test_a_stop_reaches_parked_connections(start_server):
    import signal
    import time

    server = start_server()
    idle = [server.client() for _ in range(3)]
    time.sleep(PARKED)
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=10) == 0
    for client in idle:
        assert client.read_to_eof()[-1] == "*** Server shutting down"
    assert server.stdout_lines()[-1].endswith("Server stopped")
    assert server.count_text("disconnected") == 3


def test_a_parked_client_that_never_reads_is_still_dropped(start_server):
    import time

    server = start_server("--max-sendq", "65536", "--no-presence", "--quiet")
    stuck = server.client(rcvbuf=4096)
    talker, listener = server.client(), server.client()
    time.sleep(PARKED)  # stuck is parked and reads nothing from now on
    line = "x" * 900
    for _ in range(400):  # up to 18 MB: far more than its kernel buffers and 64 KiB hold
        talker.send(*[line] * 50)
        listener.lines(50, timeout=10)
        if server.count_text("send queue exceeded"):
            break
    server.wait_for_text(f"Client 127.0.0.1:{stuck.port} disconnected (send queue exceeded)")
    talker.send("still here")
    assert listener.line() == f"{talker.nick}: still here"


def test_a_tuned_listener_hands_out_sockets_that_need_no_tuning_of_their_own():
    # The chat and IRC ports skip tune() per connection when tune_listener() says the
    # accepted sockets inherit TCP_NODELAY and SO_KEEPALIVE: they must really have them.
    import socket
    import sys

    from geventchat.doors.connection import tune_listener

    def accepted(listener):
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        sock, _ = listener.accept()
        options = (
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        )
        for each in (sock, client, listener):
            each.close()
        return options

    plain = socket.socket()
    assert accepted(plain) == (0, 0)  # nothing inherited unless the listener has it
    tuned = socket.socket()
    inherits = tune_listener(tuned)
    assert inherits == sys.platform.startswith("linux")
    if inherits:
        assert all(accepted(tuned))
