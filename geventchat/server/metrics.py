"""Operator metrics: plain counters in the hot path, Prometheus text at scrape time.

The relay's hot path only adds to int attributes of one ``Stats`` object (no locks: one
thread, and an int add is all it costs). Deliveries are counted once per message as the
number of its recipients, and bytes out once per flush, never per delivery. Nothing is
formatted until Prometheus (or anyone) reads ``http://HOST:PORT/metrics``: then
``StatsCollector`` turns the current figures into metric families for prometheus-client.

The endpoint is served by gevent's own WSGI server (``gevent.pywsgi``) in the server's
process and loop, so no thread and no monkey patching are needed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from geventchat.chat.stats import COUNTERS, Stats  # noqa: F401  (Stats: re-exported for the collectors)

log = logging.getLogger("geventchat")

MAX_ROOM_SERIES = 100


class StatsCollector:
    """A prometheus-client collector reading ``Stats`` and the hub at scrape time."""

    def __init__(
        self, stats: Stats, hub, connected: Callable[[], int], by_door: Callable[[], dict[str, int]] | None = None
    ) -> None:
        self.stats = stats
        self.hub = hub
        self.connected = connected
        self.by_door = by_door  # door name (line, web, irc) -> clients connected through it

    def describe(self) -> list:
        return []  # no describe-time collection: families are made fresh at each scrape

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.stats
        for attr, name, help_text in COUNTERS:
            yield CounterMetricFamily(name, help_text, value=getattr(stats, attr))
        yield GaugeMetricFamily("geventchat_clients_connected", "Clients connected to this server now.", value=self.connected())
        if self.by_door is not None:
            doors = GaugeMetricFamily(
                "geventchat_door_clients_connected", "Clients connected now, by front door (line, web, irc).", labels=["door"]
            )
            for door, count in sorted(self.by_door().items()):
                doors.add_metric([door], count)
            yield doors
        rooms = self.hub.room_counts()
        yield GaugeMetricFamily("geventchat_rooms", "Rooms with at least one member.", value=len(rooms))
        members = GaugeMetricFamily(
            "geventchat_room_members",
            f"Members of each room (the {MAX_ROOM_SERIES} largest rooms).",
            labels=["room"],
        )
        for name, count in sorted(rooms, key=lambda rc: -rc[1])[:MAX_ROOM_SERIES]:
            members.add_metric([name], count)
        yield members
        yield from history_families(getattr(self.hub, "history", None))


def history_families(store) -> Iterator:
    """The history store's figures (contract §10), labelled with the store: lines kept,
    write batches and their latency, failed writes, lines waiting. Nothing when history
    is off."""
    counters = getattr(store, "counters", None)
    if counters is None:
        return
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    from geventchat.stores.counters import LATENCY_BUCKETS

    label = [store.name]
    for attr, name, help_text in (
        ("lines_recorded", "geventchat_history_lines_recorded", "Chat and /me lines handed to the history store by the relay."),
        ("lines_stored", "geventchat_history_lines_stored", "History lines written for good (memory: kept)."),
        ("write_batches", "geventchat_history_write_batches", "History write batches (one transaction each)."),
        ("failed_writes", "geventchat_history_failed_writes", "History lines whose write failed (kept and retried)."),
        (
            "failed_reads",
            "geventchat_history_failed_reads",
            "History reads that failed (a join got no block, /history an error).",
        ),
    ):
        family = CounterMetricFamily(name, help_text, labels=["store"])
        family.add_metric(label, getattr(counters, attr))
        yield family
    if counters.memory_budget is not None:  # a store that keeps rooms' lines in memory (stores/roommemory.py)
        for attr, name, help_text in (
            (
                "memory_bytes",
                "geventchat_history_memory_bytes",
                "About what the rooms' kept lines take in memory (sqlite: its cache).",
            ),
            ("memory_budget", "geventchat_history_memory_budget_bytes", "What they may take (--history-memory)."),
            ("memory_rooms", "geventchat_history_memory_rooms", "Rooms with lines held in memory."),
        ):
            gauge = GaugeMetricFamily(name, help_text, labels=["store"])
            gauge.add_metric(label, getattr(counters, attr))
            yield gauge
        evicted = CounterMetricFamily(
            "geventchat_history_rooms_evicted",
            "Rooms whose lines left memory to stay within --history-memory (least recently written first).",
            labels=["store"],
        )
        evicted.add_metric(label, counters.rooms_evicted)
        yield evicted
    pending = GaugeMetricFamily("geventchat_history_pending_lines", "History lines waiting to be written.", labels=["store"])
    pending.add_metric(label, counters.pending)
    yield pending
    latency = HistogramMetricFamily(
        "geventchat_history_write_batch_seconds", "Time to write one history batch.", labels=["store"]
    )
    cumulative, buckets = 0, []
    for bound, count in zip(LATENCY_BUCKETS, counters.batch_buckets):
        cumulative += count
        buckets.append((repr(bound), cumulative))
    buckets.append(("+Inf", counters.write_batches))
    latency.add_metric(label, buckets, sum_value=counters.batch_seconds)
    yield latency


class MetricsServer:
    """``GET /metrics`` in Prometheus text format, served in this process's gevent loop.

    ``listener``: ``(host, port)`` to bind, or a listening socket (a ``--workers`` worker's
    unix socket). ``process_metrics``: add prometheus-client's ``process_*`` figures of this
    process. ``spawn``: what runs each request (gevent's default, or a group's ``spawn``);
    ``handler_class``: pywsgi's request handler (default: its own).
    """

    def __init__(self, listener, collector, *, process_metrics: bool = True, spawn="default", handler_class=None) -> None:
        from gevent.pywsgi import WSGIServer
        from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        if process_metrics:
            ProcessCollector(registry=self.registry)  # resident memory, CPU, open fds
        metrics_app = make_wsgi_app(self.registry)

        def app(environ, start_response):
            if environ.get("PATH_INFO") in ("/metrics", "/metrics/"):
                return metrics_app(environ, start_response)
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"Not found: the metrics are at /metrics\n"]

        self._server = WSGIServer(listener, app, log=None, error_log=None, spawn=spawn, handler_class=handler_class)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address  # type: ignore[return-value]  # a TCP listener's: (host, port)

    def start(self) -> None:
        """Bind and serve; raises OSError if the address cannot be used."""
        self._server.start()

    def stop(self) -> None:
        self._server.stop(timeout=1)

    def close(self) -> None:
        """Stop accepting at once (requests being served are left alone)."""
        self._server.close()
