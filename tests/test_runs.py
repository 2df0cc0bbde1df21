"""stores/runs.py: a room's last lines kept as runs (one per record call)."""

from geventchat.core.history import Entry
from geventchat.stores.runs import RoomLines, make_run, run_lines


def test_a_run_is_one_tuple_whatever_its_length():
    run = make_run(7, "lobby", 1.5, "ann", ["a", "b\tc", "d"], False)
    assert run == (7, "lobby", 1.5, "ann", 0, 3, "a\nb\tc\nd")
    assert run_lines(run) == ["a", "b\tc", "d"]
    assert run_lines(make_run(1, "lobby", 1.5, "ann", ["only"], True)) == ["only"]


def test_room_lines_keep_the_last_size_lines_across_runs():
    lines = RoomLines(5)
    next_id = 1
    for nick, texts in (("a", ["1", "2", "3"]), ("b", ["4"]), ("a", ["5", "6"]), ("c", ["7", "8", "9"])):
        lines.add(make_run(next_id, "lobby", float(next_id), nick, texts, nick == "b"))
        next_id += len(texts)
    # Whole runs are kept while they hold lines among the last 5: ["5", "6"] and ["7", "8", "9"].
    assert [run[0] for run in lines.runs] == [5, 7] and lines.total == 5
    assert lines.recent(2) == [Entry(7.0, "c", "8"), Entry(7.0, "c", "9")]
    assert [e.text for e in lines.recent(500)] == ["5", "6", "7", "8", "9"]  # never more than size
    assert lines.recent(0) == []


def test_an_action_run_reads_back_as_actions():
    lines = RoomLines(10)
    lines.add(make_run(1, "lobby", 2.0, "ann", ["waves"], True))
    assert lines.recent(5) == [Entry(2.0, "ann", "waves", True)]
