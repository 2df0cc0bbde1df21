"""Give freed memory back to the system now and then (glibc only).

glibc keeps memory that Python has freed in its heaps until the top of a heap is free, and
each thread that allocates gets a heap (an "arena") of its own: after a burst (a fault
storm, a flood of lines written to the history database by its writer thread) the server's
resident memory stays near its peak, though little of it is in use. ``malloc_trim(0)``
returns the free pages of every arena to the system. It takes a few milliseconds, so it
runs in gevent's threadpool (the loop goes on), every TRIM_INTERVAL seconds.
"""

from __future__ import annotations

import ctypes
import logging
import platform

import gevent

log = logging.getLogger("geventchat")

TRIM_INTERVAL = 10.0


def _malloc_trim():
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


class MemoryTrimmer:
    def __init__(self, interval: float = TRIM_INTERVAL) -> None:
        self.interval = interval
        self._trim = _malloc_trim()
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        if self._trim is not None and self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        pool = gevent.get_hub().threadpool
        while True:
            gevent.sleep(self.interval)
            pool.apply(self._trim, (0,))
