"""``--metrics-port`` with ``--workers``: one page in the parent, covering every worker.

Each worker serves its own metrics page (the single-process one, unchanged) on a unix
socket in a private directory of the parent's: ``worker-1.sock``, ``worker-2.sock``, ...
The name follows the worker's index, so a restarted worker is found where the one before
it was, with nothing to tell the parent. When the parent's page is read, the parent asks
every worker at once (each bounded by ``SCRAPE_TIMEOUT``) and re-emits their samples with a
``worker="i"`` label, names and help texts unchanged. A worker that does not answer (dead,
restarting, stuck) is left out of that page and shows as ``geventchat_worker_up 0``.

All of it runs in the parent's gevent loop, no thread. Workers are forked from that loop,
possibly while a page is being read: ``in_worker`` drops in the child what it inherited
of the parent's page (the listening socket, the requests and fetches in flight), so that
the child never answers on a connection of the parent's.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator

import gevent
import gevent.pool
from gevent import socket as gsocket
from gevent.pywsgi import WSGIHandler

from geventchat.server.metrics import MetricsServer

log = logging.getLogger("geventchat")

# Seconds a worker has to answer before a page goes out without it.
SCRAPE_TIMEOUT = 1.0

# A worker's page is a few KiB (the room series are capped); more than this is not one.
MAX_PAGE = 4 * 1024 * 1024

WORKER_UP_HELP = "1 if this worker answered for this page, 0 if not (dead, restarting or stuck)."


class WorkerMetrics:
    """The parent's metrics page, and where each worker serves its own."""

    def __init__(self, host: str, port: int, workers: int) -> None:
        """Binds ``host:port`` and serves it; raises OSError if it cannot be used."""
        self.workers = workers
        self._dir = tempfile.mkdtemp(prefix="geventchat-metrics-")  # mode 0700: ours alone
        # Requests and fetches in one group: a new worker drops them all at once.
        self._greenlets = gevent.pool.Group()
        try:
            self._server = MetricsServer(
                (host, port),
                WorkersCollector(self.scrape),
                process_metrics=False,
                spawn=self._greenlets.spawn,
                handler_class=_Handler,
            )
            self._server.start()
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address[:2]

    def socket_path(self, index: int) -> str:
        """Where worker ``index`` (0-based) serves its page."""
        return os.path.join(self._dir, f"worker-{index + 1}.sock")

    def in_worker(self, index: int) -> socket.socket:
        """In the newly forked worker ``index``: forget the parent's page; the listening
        socket this worker serves its own page on."""
        self._server.close()
        self._greenlets.kill(block=False)  # before the child's loop runs them again
        path = self.socket_path(index)
        try:
            os.unlink(path)  # left by this worker's predecessor
        except FileNotFoundError:
            pass
        sock = gsocket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(16)
        return sock

    def scrape(self) -> list[str | None]:
        """Every worker's page, or None for those that did not answer in time."""
        fetches = [self._greenlets.spawn(fetch, self.socket_path(index)) for index in range(self.workers)]
        try:
            gevent.joinall(fetches, timeout=SCRAPE_TIMEOUT * 2)  # each is bounded already
        finally:
            gevent.killall(fetches, block=False)
        return [greenlet.value if isinstance(greenlet.value, str) else None for greenlet in fetches]

    def close(self) -> None:
        self._server.stop()
        self._greenlets.kill(timeout=1)
        shutil.rmtree(self._dir, ignore_errors=True)


class _Handler(WSGIHandler):
    """pywsgi's request handler, except that a request killed (``in_worker``, ``close``)
    ends without a word: pywsgi would answer it ``500``, and in a new worker that answer
    would go out on a connection of the parent's."""

    def handle_error(self, t, v, tb) -> None:
        if issubclass(t, gevent.GreenletExit):
            self.close_connection = True
            return
        super().handle_error(t, v, tb)


def fetch(path: str, timeout: float = SCRAPE_TIMEOUT) -> str | None:
    """The metrics page served on the unix socket ``path``; None if none comes in time."""
    with gevent.Timeout(timeout, False):  # type: ignore[arg-type]  # False: end quietly (gevent's stubs miss it)
        try:
            with gsocket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(path)
                sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: worker\r\n\r\n")
                response = bytearray()
                while len(response) <= MAX_PAGE:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    response += chunk
                else:
                    return None
        except OSError:
            return None
        head, _, body = bytes(response).partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split()
        if len(status) < 2 or status[1] != b"200":
            return None
        return body.decode("utf-8", "replace")
    return None


def merge(pages: Iterable[str | None]) -> list:
    """The samples of every worker's page (``pages[i]`` is worker i+1's, None if it did not
    answer) as metric families, each sample labelled ``worker="i"``; then ``geventchat_worker_up``."""
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.parser import text_string_to_metric_families

    merged: dict[str, Metric] = {}
    up = GaugeMetricFamily("geventchat_worker_up", WORKER_UP_HELP, labels=["worker"])
    for index, page in enumerate(pages):
        worker = str(index + 1)
        families = None
        if page is not None:
            try:
                families = list(text_string_to_metric_families(page))
            except Exception as exc:  # the parser's errors are not one class: any is "no page"
                log.warning("Worker %s sent metrics that cannot be read (%s)", worker, exc)
        up.add_metric([worker], 0 if families is None else 1)
        for family in families or ():
            metric = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            for sample in family.samples:
                metric.samples.append(sample._replace(labels={"worker": worker, **sample.labels}))
    return [*merged.values(), up]


class WorkersCollector:
    """A prometheus-client collector: the workers' pages, read when the parent's is."""

    def __init__(self, scrape) -> None:
        self.scrape = scrape

    def describe(self) -> list:
        return []  # nothing to collect before the first page is asked for

    def collect(self) -> Iterator:
        yield from merge(self.scrape())
