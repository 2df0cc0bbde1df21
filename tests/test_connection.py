"""The connection's read and write paths, seen from real sockets."""

import threading

from conftest import ChatClient


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
