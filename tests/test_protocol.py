"""The sans-IO protocol: bytes in, events out; requests parsed; replies formatted."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geventchat.core import protocol
from geventchat.core.protocol import Chat, Command, Invalid, LineFramer, LineTooLong, Quit, decode_line


def feed_all(framer, chunks):
    events = []
    for chunk in chunks:
        events.extend(framer.receive_data(chunk))
    return events


def one_byte_at_a_time(data):
    return [data[i : i + 1] for i in range(len(data))]


# ------------------------------------------------------------------------ framing


def test_lines_split_on_newline_and_crlf():
    assert LineFramer().receive_data(b"one\ntwo\r\nthree") == ["one", "two"]


def test_partial_line_is_completed_by_later_data():
    framer = LineFramer()
    assert framer.receive_data(b"hel") == []
    assert framer.buffered == 3
    assert framer.receive_data(b"lo\nwor") == ["hello"]
    assert framer.receive_data(b"ld\n") == ["world"]
    assert framer.buffered == 0


def test_one_byte_at_a_time_gives_the_same_lines():
    data = b"alpha\r\nbeta\n\ngamma \xc3\xa9\n"
    assert feed_all(LineFramer(), one_byte_at_a_time(data)) == ["alpha", "beta", "", "gamma \u00e9"]


def test_line_of_exactly_the_limit_is_accepted_with_either_ending():
    framer = LineFramer(max_line=5)
    assert framer.receive_data(b"12345\n") == ["12345"]
    assert feed_all(framer, one_byte_at_a_time(b"12345\r\n")) == ["12345"]


def test_overlong_line_is_discarded_whole_and_reported_once():
    framer = LineFramer(max_line=5)
    events = framer.receive_data(b"123456\nok\n")
    assert events == [LineTooLong(6), "ok"]


def test_overlong_line_without_newline_holds_no_more_than_the_limit():
    framer = LineFramer(max_line=10)
    for _ in range(1000):
        assert framer.receive_data(b"x" * 100) == []
        assert framer.buffered <= 11
    assert framer.receive_data(b"tail\nnext\n") == [LineTooLong(100_004), "next"]


def test_overlong_line_fed_one_byte_at_a_time():
    framer = LineFramer(max_line=3)
    events = feed_all(framer, one_byte_at_a_time(b"abcdef\nabc\n"))
    assert events == [LineTooLong(6), "abc"]


def test_invalid_utf8_is_replaced():
    assert LineFramer().receive_data(b"caf\xc3 ok \xff\n") == ["caf\ufffd ok \ufffd"]


def test_utf8_character_split_across_chunks_survives():
    assert feed_all(LineFramer(), [b"\xe2\x82", b"\xac\n"]) == ["\u20ac"]


def test_control_characters_are_removed_but_tab_is_kept():
    line = LineFramer().receive_data(b"\x1b[2Jred\x07\tbell\x7f\xc2\x9b31m\n")[0]
    assert line == "[2Jred\tbell31m"


def test_max_line_must_be_positive():
    with pytest.raises(ValueError):
        LineFramer(0)


# Property tests: any split of the same stream gives the same events; memory stays bounded.

streams = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\n", b"\r\n", b"\r", b"\xff", b"\x1b[31m", b"exit\n", b"/nick x\n"]),
    ),
    max_size=30,
).map(b"".join)


@st.composite
def stream_and_cuts(draw):
    data = draw(streams)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    pieces, last = [], 0
    for cut in cuts + [len(data)]:
        pieces.append(data[last:cut])
        last = cut
    return data, pieces


@settings(max_examples=400, deadline=None)
@given(stream_and_cuts(), st.integers(1, 20))
def test_any_split_of_a_stream_gives_the_same_events(data_and_pieces, max_line):
    data, pieces = data_and_pieces
    whole = LineFramer(max_line).receive_data(data)
    framer = LineFramer(max_line)
    split = []
    for piece in pieces:
        split.extend(framer.receive_data(piece))
        assert framer.buffered <= max_line + 1
    assert split == whole
    assert split == feed_all(LineFramer(max_line), one_byte_at_a_time(data))


def reference_events(data: bytes, max_line: int) -> list:
    """What a framer must make of a whole stream, line by line (the slow, plain way)."""
    *lines, _unfinished = data.split(b"\n")
    events = []
    for raw in lines:
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        events.append(LineTooLong(len(raw)) if len(raw) > max_line else decode_line(raw))
    return events


ascii_streams = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(max_codepoint=126, min_codepoint=32), max_size=60).map(str.encode),
        st.sampled_from([b"\n", b"\n", b"\t", b"\r\n", b"\r", b"\x1b[31m", b"\x7f", b"\x00", "\u00e9".encode()]),
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(ascii_streams, st.data(), st.sampled_from([8, 64, 4096]))
def test_chunks_of_plain_ascii_give_what_line_by_line_decoding_gives(data, draw, max_line):
    # Mostly printable ASCII: chunks without controls take the framer's fast path, the
    # others the line-by-line one; together they must give exactly the reference lines.
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=8)))
    framer, events, last = LineFramer(max_line), [], 0
    for cut in [*cuts, len(data)]:
        events += framer.receive_data(data[last:cut])
        last = cut
    assert events == reference_events(data, max_line)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_no_control_character_survives_sanitising(text):
    clean = protocol.strip_controls(text)
    assert not any((ord(c) < 32 and c != "\t") or 0x7F <= ord(c) <= 0x9F for c in clean)
    safe = protocol.terminal_safe(text)
    assert not any(
        ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
        for c in safe
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoded_lines_never_hold_controls_or_raise(data):
    for event in LineFramer(50).receive_data(data + b"\n"):
        if isinstance(event, str):
            assert "\x1b" not in event and "\n" not in event and "\r" not in event
            assert protocol.parse_line(event) is None or protocol.parse_line(event) is not None


# ------------------------------------------------------------------------ requests


@pytest.mark.parametrize(
    "line, request_",
    [
        ("hello there", Chat("hello there")),
        ("//slash", Chat("/slash")),
        ("exit", Quit()),
        ("  exit ", Quit()),
        ("exit now", Chat("exit now")),
        ("/quit", Quit()),
        ("/QUIT gone fishing", Quit("gone fishing")),
        ("/nick alice", Command("nick", ("alice",))),
        ("/Join  #room", Command("join", ("#room",))),
        ("/msg bob hi  there", Command("msg", ("bob", "hi  there"))),
        ("/me waves", Command("me", ("waves",))),
        ("/who", Command("who", ())),
        ("/rooms extra", Command("rooms", ())),
        ("/help", Command("help", ())),
        ("/stats", Command("stats", ())),
        ("/nick", Invalid("usage: /nick NAME")),
        ("/join   ", Invalid("usage: /join ROOM")),
        ("/msg bob", Invalid("usage: /msg NICK text")),
        ("/me", Invalid("usage: /me text")),
        ("/frobnicate now", Invalid("unknown command /frobnicate; type /help for the list")),
        ("/", Invalid("unknown command /; type /help for the list")),
        ("", None),
        ("   ", None),
    ],
)
def test_parse_line(line, request_):
    assert protocol.parse_line(line) == request_


@pytest.mark.parametrize("name", ["a", "51044", "Alice_[x]", "{a|b^c}-", "x" * 32])
def test_valid_nicks(name):
    assert protocol.valid_nick(name)


@pytest.mark.parametrize("name", ["", "x" * 33, "bad name", "caf\u00e9", "a:b", "a*", "/x", "a.b"])
def test_invalid_nicks(name):
    assert not protocol.valid_nick(name)


def test_room_names():
    assert protocol.valid_room("#dev.ops-1_x")
    assert not protocol.valid_room("no spaces")
    assert not protocol.valid_room("r" * 33)


# ------------------------------------------------------------------------- replies


def test_reply_formats():
    assert protocol.chat_line("51044", "hi") == b"51044: hi\n"
    assert protocol.action_line("bob", "waves") == b"* bob waves\n"
    assert protocol.private_line("bob", "psst") == b"*bob* psst\n"
    assert protocol.notice("hello") == b"*** hello\n"
    assert protocol.error("nope") == b"*** Error: nope\n"
    assert protocol.welcome("51044", "lobby") == b"*** Welcome, 51044! You are in lobby. Type /help for commands.\n"
    assert protocol.quit_line("bob") == b"*** bob quit\n"
    assert protocol.quit_line("bob", "bye") == b"*** bob quit (bye)\n"
    assert protocol.line_too_long(4096).startswith(b"*** Error: line too long")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(), max_size=5))
def test_chat_lines_are_chat_line_for_each_text_in_one_piece(texts):
    assert protocol.chat_lines("bob", texts) == b"".join(protocol.chat_line("bob", text) for text in texts)


def test_help_lists_every_command():
    text = b"".join(protocol.help_lines()).decode()
    for name in protocol.COMMAND_SPECS:
        assert f"/{name}" in text


@pytest.mark.parametrize(
    "line, kind, nick, text",
    [
        ("51044: hi: there", "chat", "51044", "hi: there"),
        ("* bob waves", "action", "bob", "waves"),
        ("*bob* psst", "private", "bob", "psst"),
        ("*** bob joined lobby", "notice", "", "bob joined lobby"),
        ("*** Error: nope", "error", "", "nope"),
        ("no colon here", "other", "", "no colon here"),
    ],
)
def test_classify_server_lines(line, kind, nick, text):
    assert protocol.classify(line) == protocol.ServerLine(kind, nick, text)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.sampled_from(["exit", " exit ", "/nick a", "//x", "", "  ", "\t", "hello", "an exit"])))
def test_plain_chat_is_what_parse_line_reads_as_that_chat_line(text):
    # The relay skips parse_line for lines is_plain_chat passes: they must be exactly
    # the lines parse_line reads as chat of that same text.
    assert protocol.is_plain_chat(text) == (protocol.parse_line(text) == Chat(text))


_LINE_STARTS = [
    "exit",
    " exit",
    "\u3000exit",
    "\x85exit",
    "\u2028",
    "/me x",
    "e",
    "ex",
    "",
    " ",
    "\t",
    "hello",
    "Exit",
    "\u200bx",
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=6), st.sampled_from(_LINE_STARTS), st.builds(LineTooLong, st.integers(1, 9)))))
def test_plain_chat_count_is_the_leading_lines_is_plain_chat_passes(events):
    # The relay hands the hub this many lines of a chunk without parse_line: exactly the
    # leading ones is_plain_chat passes, however the chunk's first characters look.
    expected = 0
    for event in events:
        if not isinstance(event, str) or not protocol.is_plain_chat(event):
            break
        expected += 1
    assert protocol.plain_chat_count(events) == expected


def test_plain_chat_count_of_the_usual_chunk_and_of_mixed_ones():
    assert protocol.plain_chat_count(["hello", "how are you", "fine"]) == 3
    assert protocol.plain_chat_count(["hello", "exit", "later"]) == 1
    assert protocol.plain_chat_count(["every one", "e is fine too"]) == 2
    assert protocol.plain_chat_count(["a", "/nick b", "c"]) == 1
    assert protocol.plain_chat_count(["a", LineTooLong(5000), "c"]) == 1
    assert protocol.plain_chat_count(["a", "\u3000exit"]) == 1
    assert protocol.plain_chat_count([]) == 0


def test_plain_chat_takes_the_usual_line_and_leaves_the_rest_to_parse_line():
    assert protocol.is_plain_chat("hello there")
    assert protocol.is_plain_chat("xxxxexit is near")
    assert not protocol.is_plain_chat("exit")
    assert not protocol.is_plain_chat(" exit")
    assert not protocol.is_plain_chat("/me waves")
    assert not protocol.is_plain_chat("")
    assert not protocol.is_plain_chat("   ")
