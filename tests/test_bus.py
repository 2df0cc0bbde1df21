"""The Redis bus (chat/bus.py) when a process cannot keep up with what comes over it.

Redis keeps what a subscriber has not read yet, and past its pub/sub output buffer limit it
closes the subscription: every line then on its way is lost for that process's members.
(The fault soak's cluster run lost thousands of lines that way: 32 MB behind, cut off.) A
process whose subscriber is behind closes its input gate, so that its own clients are read
no further until it has caught up, and opens it again then.

The bus runs in a child process, monkey-patched as the server is (this test process is
not), over a real redis-server; its sink is slow (it blocks the loop a little for each
message, as a busy process does), and a plain Redis client publishes faster than that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from redis_fixture import redis_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
from gevent import monkey
monkey.patch_all()
import gevent, redis
from geventchat.chat.bus import RedisBus

url, messages, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

class SlowSink:
    def __init__(self):
        self.records, self.links = 0, []
    def bus_records(self, records):
        self.records += len(records)
        time.sleep(0.004)  # a busy process: the loop is held, nothing is read meanwhile
    def bus_link(self, up):
        self.links.append(up)
    def bus_snapshot(self):
        return {}
    def bus_reaped(self, members): pass
    def bus_rejoined(self): pass
    def bus_clash(self, folded): pass

bus, sink = RedisBus(url), SlowSink()
bus.start(sink)
assert bus.wait_up(10)
closed_seen = []
def watch():  # what the connections' readers see
    while True:
        if not bus.gate.is_set():
            closed_seen.append(time.monotonic())
        gevent.sleep(0.005)
watcher = gevent.spawn(watch)
publisher = redis.Redis.from_url(url)
record = b"R" + b"room\x1f" + b"x" * size
def publish():
    pipe = publisher.pipeline(transaction=False)
    for n in range(messages):
        pipe.publish(bus.channel, b"another-process\x1e" + record)
        if n % 50 == 49:
            pipe.execute()
            pipe = publisher.pipeline(transaction=False)
    pipe.execute()
gevent.spawn(publish).join()
deadline = time.monotonic() + 60
while sink.records < messages and time.monotonic() < deadline and bus.up:
    gevent.sleep(0.05)
gevent.sleep(0.2)
print(json.dumps({"records": sink.records, "links": sink.links, "held": bus.held, "closed_seen": len(closed_seen),
                  "gate_open_at_end": bus.gate.is_set(), "up": bus.up}))
watcher.kill()
bus.close()
"""


def test_a_subscriber_behind_closes_the_input_gate_and_opens_it_once_caught_up(redis_server):  # noqa: F811
    messages, size = 600, 16 * 1024  # ~10 MB published, faster than the slow sink reads
    run = subprocess.run(
        [sys.executable, "-c", CHILD, redis_server.url, str(messages), str(size)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["held"] >= 1 and seen["closed_seen"] >= 1, seen  # the gate closed while behind
    assert seen["gate_open_at_end"], seen  # and opened again once caught up
    assert seen["records"] == messages and seen["links"] == [True] and seen["up"], seen  # every record, link up throughout
