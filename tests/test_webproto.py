"""The browser gateway without sockets: HTTP bytes in, responses out; WebSocket frames in,
line events out; lines in, frames out (``geventchat.webproto``)."""

from __future__ import annotations

import base64
import hashlib

import h11
import pytest
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from geventchat.core import protocol
from geventchat.core.webproto import (
    ControlFrame,
    HttpGateway,
    StaticFile,
    WebSocketFramer,
    encode_lines,
    load_static,
    normalise_origin,
    parse_origins,
    text_frame,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = base64.b64encode(hashlib.sha1(KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
FILES = {
    "/": StaticFile(b"<!doctype html><p>page</p>", "text/html; charset=utf-8"),
    "/static/app.js": StaticFile(b"console.log(1)", "text/javascript; charset=utf-8"),
}


def gateway(origins: str = "", scheme: str = "http") -> HttpGateway:
    return HttpGateway(FILES, parse_origins(origins), scheme, peer="127.0.0.1:5555")


def handshake(
    origin: str | None = "http://chat.example:8080",
    host: str = "chat.example:8080",
    path: str = "/ws",
    key: bytes | None = KEY,
    method: str = "GET",
) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
    ]
    if key is not None:
        lines.append("Sec-WebSocket-Key: " + key.decode())
    if origin is not None:
        lines.append("Origin: " + origin)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def responses(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Parse what the gateway sent as a client would: (status, headers, body) each."""
    client = h11.Connection(h11.CLIENT)
    out = []
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    status, headers, body = 0, {}, b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            break
        if isinstance(event, (h11.Response, h11.InformationalResponse)):
            status, headers, body = event.status_code, {k.lower(): v for k, v in event.headers}, b""
            if isinstance(event, h11.InformationalResponse):
                out.append((status, headers, body))
                break
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append((status, headers, body))
            if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
                break
            client.start_next_cycle()
            client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            client.send(h11.EndOfMessage())
    return out


# ---------------------------------------------------------------------------- HTTP


def test_the_page_is_served_with_a_strict_content_security_policy():
    step = gateway().receive_data(b"GET / HTTP/1.1\r\nHost: chat.example:8080\r\n\r\n")
    assert not step.close and step.upgrade is None and step.log == []
    [(status, headers, body)] = responses(step.send)
    assert status == 200 and body == FILES["/"].body
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    csp = headers[b"content-security-policy"]
    assert b"default-src 'none'" in csp and b"script-src 'self'" in csp and b"frame-ancestors 'none'" in csp
    assert headers[b"x-content-type-options"] == b"nosniff"


def test_keep_alive_serves_pipelined_requests_in_order_and_head_has_no_body():
    gw = gateway()
    step = gw.receive_data(
        b"GET /static/app.js HTTP/1.1\r\nHost: h\r\n\r\n"
        b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /nothing/here HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    )
    assert not step.close
    assert b"HTTP/1.1 200" in step.send and b"console.log(1)" in step.send
    assert step.send.count(b"HTTP/1.1 200") == 2
    assert b"HTTP/1.1 404" in step.send and b"HTTP/1.1 405" in step.send
    assert step.send.count(FILES["/"].body) == 0  # HEAD: headers only
    assert gw.idle


def test_a_request_split_into_single_bytes_is_answered_once_complete():
    gw = gateway()
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    sent = b""
    for i in range(len(raw)):
        step = gw.receive_data(raw[i : i + 1])
        sent += step.send
        assert not step.close
    assert sent.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS hello
    ],
)
def test_a_bad_request_gets_400_a_close_and_one_log_line(raw):
    step = gateway().receive_data(raw)
    assert step.close and step.upgrade is None
    assert step.send.startswith(b"HTTP/1.1 400")
    assert len(step.log) == 1 and step.log[0].startswith("Bad HTTP request from 127.0.0.1:5555 (")


def test_a_request_head_larger_than_the_limit_is_refused():
    step = gateway().receive_data(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 20000)
    assert step.close and step.send.startswith(b"HTTP/1.1 431")


def test_a_complete_request_head_larger_than_the_limit_is_refused_too():
    # One recv can bring a whole head (64 KiB): h11 checks the limit only on an
    # unfinished one, and the limit must hold either way.
    step = gateway().receive_data(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert step.close and step.upgrade is None
    assert step.send.startswith(b"HTTP/1.1 431")
    assert len(step.log) == 1 and step.log[0].startswith("Bad HTTP request from 127.0.0.1:5555 (")
    step = gateway().receive_data(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 15000 + b"\r\n\r\n")
    assert step.send.startswith(b"HTTP/1.1 200") and not step.close


def test_the_static_files_ship_with_the_package():
    files = load_static()
    assert "/" in files and files["/"] is files["/static/index.html"]
    assert files["/"].content_type.startswith("text/html")


# ----------------------------------------------------------------------- handshake


def test_a_same_origin_handshake_is_accepted_with_the_right_key():
    step = gateway().receive_data(handshake() + b"\x81\x85")
    assert step.upgrade is not None and not step.close
    assert step.send.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: " + ACCEPT in step.send
    assert step.upgrade.trailing == b"\x81\x85"  # a frame that came with the handshake
    assert step.upgrade.origin == "http://chat.example:8080"


@pytest.mark.parametrize(
    "origin, host, origins",
    [
        ("HTTP://Chat.Example:8080", "chat.example:8080", ""),  # case does not matter
        ("http://chat.example", "chat.example:80", ""),  # default port
        ("https://front.example", "chat.example:8080", "https://front.example,http://other"),
        (None, "chat.example:8080", ""),  # not a browser page: nothing to protect
    ],
)
def test_allowed_origins(origin, host, origins):
    step = gateway(origins).receive_data(handshake(origin=origin, host=host))
    assert step.upgrade is not None and step.send.startswith(b"HTTP/1.1 101 ")


@pytest.mark.parametrize(
    "origin, origins, scheme",
    [
        ("http://evil.example", "", "http"),
        ("null", "", "http"),
        ("http://chat.example:8081", "", "http"),  # another port is another origin
        ("http://chat.example:8080", "", "https"),  # the page was served over https
        ("https://evil.example", "https://front.example", "http"),
    ],
)
def test_a_cross_origin_handshake_is_refused_with_403_never_101(origin, origins, scheme):
    step = gateway(origins, scheme).receive_data(handshake(origin=origin))
    assert step.upgrade is None and step.close
    assert step.send.startswith(b"HTTP/1.1 403 ") and b" 101 " not in step.send
    assert step.log == [f"Refused WebSocket from 127.0.0.1:5555 (origin {origin!r} not allowed)"]


@pytest.mark.parametrize(
    "raw, status",
    [
        (handshake(key=None), 400),
        (handshake(method="POST"), 400),
        (handshake().replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"), 426),
        (b"GET /ws HTTP/1.1\r\nHost: chat.example:8080\r\n\r\n", 400),  # a plain GET
    ],
)
def test_a_bad_handshake_is_refused_cleanly(raw, status):
    step = gateway().receive_data(raw)
    assert step.upgrade is None and step.close
    assert step.send.startswith(f"HTTP/1.1 {status} ".encode())
    assert len(step.log) == 1 and step.log[0].startswith("Bad WebSocket handshake from 127.0.0.1:5555")


def test_origins_flag_parsing():
    assert parse_origins("https://A.example/, http://b.example:80") == {"https://a.example", "http://b.example"}
    assert normalise_origin("https://x:443") == "https://x"
    for bad in ("example.com", "ftp://x", "http://x/path"):
        with pytest.raises(ValueError):
            parse_origins(bad)


# ------------------------------------------------------------------------- frames


class Peer:
    """A browser's side of an open WebSocket: masked frames out, server frames parsed."""

    def __init__(self) -> None:
        self.ws = WsConnection(ConnectionType.CLIENT)

    def text(self, text: str, finished: bool = True) -> bytes:
        return self.ws.send(TextMessage(data=text, message_finished=finished))

    def binary(self, data: bytes) -> bytes:
        return self.ws.send(BytesMessage(data=data))

    def read(self, data: bytes) -> list:
        self.ws.receive_data(data)
        return list(self.ws.events())


def framer(max_line: int = 20):
    control: list[bytes] = []
    server = WsConnection(ConnectionType.SERVER)
    return WebSocketFramer(server, max_line, control.append), control


def test_each_text_frame_is_one_line_however_the_bytes_are_split():
    f, _ = framer()
    peer = Peer()
    data = peer.text("hello") + peer.text("/nick bob") + peer.text("second line\n") + peer.text("crlf\r\n")
    events = []
    for i in range(len(data)):
        events += f.receive_data(data[i : i + 1])
    assert events == ["hello", "/nick bob", "second line", "crlf"]


def test_a_fragmented_message_is_one_line():
    f, _ = framer()
    peer = Peer()
    data = peer.text("hel", finished=False) + peer.text("lo", finished=False) + peer.text(" you")
    assert f.receive_data(data) == ["hello you"]


def test_control_characters_are_removed_and_bad_utf8_in_binary_replaced():
    f, _ = framer(max_line=100)
    peer = Peer()
    assert f.receive_data(peer.text("a\x1b[31mb\x07c\td")) == ["a[31mbc\td"]
    assert f.receive_data(peer.binary(b"bin\xff\xfe ok")) == ["bin\ufffd\ufffd ok"]


def test_an_oversize_frame_is_line_too_long_and_the_connection_stays_usable():
    f, control = framer(max_line=20)
    peer = Peer()
    assert f.receive_data(peer.text("x" * 20)) == ["x" * 20]  # exactly the limit is fine
    assert f.receive_data(peer.text("y" * 20 + "\n")) == ["y" * 20]  # line ending not counted
    assert f.receive_data(peer.text("z" * 21)) == [protocol.LineTooLong(21)]
    assert f.receive_data(peer.text("é" * 11)) == [protocol.LineTooLong(22)]  # bytes, not characters
    # A long fragmented message is discarded as it comes: nothing of it is held.
    events = f.receive_data(peer.text("a" * 15, finished=False))
    events += f.receive_data(peer.text("b" * 15, finished=False))
    assert f.buffered == 0
    events += f.receive_data(peer.text("c"))
    assert events == [protocol.LineTooLong(31)]
    assert f.receive_data(peer.text("after")) == ["after"]
    assert not f.closed and control == []


def test_a_big_frame_never_holds_much_more_than_the_limit():
    f, _ = framer(max_line=100)
    peer = Peer()
    data = peer.text("q" * 1_000_000)
    for i in range(0, len(data), 4096):
        f.receive_data(data[i : i + 4096])
        assert f.buffered <= 102
    assert f.receive_data(peer.text("ok")) == ["ok"]


def test_ping_is_answered_with_pong_through_the_control_path():
    f, control = framer()
    peer = Peer()
    assert f.receive_data(peer.ws.send(Ping(payload=b"p1"))) == []
    assert len(control) == 1
    assert peer.read(control[0]) == [Pong(payload=b"p1")]


def test_a_close_from_the_peer_ends_reading_and_is_answered_with_its_code():
    f, _ = framer()
    peer = Peer()
    after = Peer().text("ignored")
    events = f.receive_data(peer.text("last") + peer.ws.send(CloseConnection(code=1000)) + after)
    assert events == ["last"]
    assert f.closed and f.close_reply == (1000, "") and f.error == ""
    assert f.receive_data(b"more") == []


@pytest.mark.parametrize(
    "data",
    [
        b"\x81\x05hello",  # not masked: a browser always masks
        b"\x83\x80abcd",  # reserved opcode
        Peer().binary(b"x").replace(b"\x82", b"\x81", 1)[:2] + b"\x00\x00\x00\x00" + b"\xff",  # bad UTF-8 in text
    ],
)
def test_a_bad_frame_closes_with_an_error(data):
    f, _ = framer()
    assert f.receive_data(data) == []
    assert f.closed and f.error
    assert f.close_reply is not None and f.close_reply[0] in (1002, 1007)


def test_lines_become_one_text_frame_each_and_control_frames_pass_through():
    peer = Peer()
    lines = [b"alice: hi\n", b"*** x\n", b"y" * 200 + b"\n", b"z" * 70000 + b"\n"]
    pong = WsConnection(ConnectionType.SERVER).send(Pong(payload=b"p"))
    data = encode_lines([lines[0] + lines[1], ControlFrame(pong)] + lines[2:])  # a piece may hold several lines
    events = peer.read(data)
    assert [e.data for e in events if isinstance(e, TextMessage)] == ["alice: hi", "*** x", "y" * 200, "z" * 70000]
    assert all(e.message_finished for e in events if isinstance(e, TextMessage))
    assert Pong(payload=b"p") in events
    assert text_frame(b"") == b"\x81\x00"


def test_in_line_while_any_part_of_a_frame_is_held():
    f, _ = framer()
    data = Peer().text("hello")
    assert not f.in_line
    f.receive_data(data[:1])  # half a header
    assert f.in_line
    f.receive_data(data[1:6])  # header and mask, no payload yet
    assert f.in_line
    f.receive_data(data[6:8])
    assert f.in_line
    assert f.receive_data(data[8:]) == ["hello"]
    assert not f.in_line
