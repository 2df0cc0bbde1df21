"""The bus layout measurement (bench/buslayout.py): one tiny real run of both layouts."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

from redis_fixture import _missing

from bench.buslayout import local_rooms

ROOT = Path(__file__).resolve().parent.parent


def test_local_rooms_cover_every_room_once_at_one_share_each():
    assert [local_rooms(p, 4, 100, 0.25) for p in range(4)] == [list(range(start, start + 25)) for start in (0, 25, 50, 75)]
    assert local_rooms(3, 4, 1, 0.25) == [0]  # at least one room
    assert local_rooms(1, 2, 10, 1.0) == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]


def test_both_layouts_deliver_every_expected_record(tmp_path):
    try:
        import redis  # noqa: F401
    except ImportError:
        _missing("the redis package is not installed")
    if shutil.which("redis-server") is None:
        _missing("redis-server is not installed")
    lines, batch, processes = 3000, 20, 2
    out = tmp_path / "buslayout.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.buslayout",
            "--processes",
            str(processes),
            "--rooms",
            "1,20",
            "--fraction",
            "1,0.5",
            "--lines",
            str(lines),
            "--batch",
            str(batch),
            "--timeout",
            "20",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    table = run.stdout.splitlines()
    assert sum(line.startswith("cluster") for line in table) == 4 and sum(line.startswith("room ") for line in table) == 4, (
        run.stdout
    )

    results = json.loads(out.read_text())["results"]
    assert [(r["layout"], r["rooms"], r["fraction"]) for r in results] == [
        (layout, rooms, fraction) for rooms in (1, 20) for fraction in (1.0, 0.5) for layout in ("cluster", "room")
    ]
    for r in results:
        # With 20 rooms at fraction 0.5 the two processes split the rooms: each line is kept once.
        split = r["rooms"] == 20 and r["fraction"] == 0.5
        assert r["kept"] == (lines if split else processes * lines), r
        if r["layout"] == "cluster":
            assert r["received"] == processes * lines, r  # everything, filtered locally
            assert r["messages_published"] == math.ceil(lines / batch), r
        else:
            assert r["received"] == r["kept"], r  # only its own rooms' records reach a process
            assert r["messages_published"] >= math.ceil(lines / batch), r
        assert r["wall_s"] > 0 and r["kept_per_s"] > 0, r
        for part in ("redis", "subscribers", "publishers"):
            assert r[f"{part}_cpu_s"] >= 0 and r[f"{part}_us_per_line"] >= 0, r
        assert r["subscribers_cpu_s"] > 0 and r["publishers_cpu_s"] > 0, r
        assert r["total_us_per_line"] > 0, r
