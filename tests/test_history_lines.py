"""core/history.py: the replay block's lines, /history's N, and reading blocks back."""

import calendar
import time

import pytest

from geventchat.core.history import BlockReader, Entry, block, parse_count, parse_history_line

WHEN = float(calendar.timegm((2026, 3, 4, 5, 6, 7, 0, 0, 0)))


def test_a_block_is_head_lines_oldest_first_and_end_in_utc():
    data = block("Lobby", [Entry(WHEN, "ann", "hi: there"), Entry(WHEN + 61, "bob", "waves", True)])
    assert data.decode().splitlines() == [
        "*** Recent messages in Lobby (2):",
        "*** [2026-03-04 05:06:07] ann: hi: there",
        "*** [2026-03-04 05:07:08] * bob waves",
        "*** End of recent messages",
    ]
    assert block("Lobby", []) == b""


@pytest.mark.parametrize(
    "args, count",
    [((), 20), (("1",), 1), (("500",), 500), (("501",), 500), (("9" * 40,), 500)]
    + [((bad,), None) for bad in ("0", "-1", "+3", "1.5", "x", "٣", "1 2", " ")],
)
def test_history_n(args, count):
    assert parse_count(args) == count


def test_reading_a_block_back_line_by_line():
    reader = BlockReader()
    lines = [
        "*** Welcome, ann! You are in lobby. Type /help for commands.",
        "*** Recent messages in lobby (2):",
        "*** [2026-03-04 05:06:07] bob: hello",
        "*** [2026-03-04 05:06:08] * bob waves",
        "*** End of recent messages",
        "bob: live",
        "*** [2026-03-04 05:06:07] bob: not in a block",
    ]
    assert [reader.feed(line) for line in lines] == [None, "start", "entry", "entry", "end", None, None]
    assert parse_history_line(lines[2]) == (WHEN, "bob: hello")


def test_a_server_without_blocks_and_a_broken_block_read_as_plain_lines():
    reader = BlockReader()
    assert reader.feed("bob: *** Recent messages in lobby (2):") is None
    assert reader.feed("*** Recent messages in lobby (3):") == "start"
    assert reader.feed("*** [2026-03-04 05:06:07] bob: one") == "entry"
    assert reader.feed("bob: the block was cut short") is None  # not a block line: shown as it is
    assert reader.feed("*** End of recent messages") is None  # outside a block it is any notice
    assert reader.feed("*** [2026-13-45 99:99:99] bob: bad time") is None
    assert time.gmtime(WHEN).tm_hour == 5
