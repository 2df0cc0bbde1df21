"""Starting, finding and stopping the servers under test (always by PID, only our own)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil

_LISTEN_RE = re.compile(r"Server listening on (\S+):(\d+)")

# name -> how to start it on a free port (None: the port is chosen here, see ncat)
SERVER_NAMES = ("geventchat", "threaded", "asyncio", "ncat", "lossy")


def available(name: str) -> bool:
    if name == "ncat":
        return shutil.which("ncat") is not None
    if name == "geventchat":
        try:
            import importlib.util

            return importlib.util.find_spec("geventchat.server") is not None
        except ImportError:
            return False
    return name in SERVER_NAMES


def _command(name: str, host: str, port: int, clients: int) -> list[str]:
    py = [sys.executable, "-m"]
    if name == "geventchat":
        # --max-clients leaves room above the benchmark's clients
        return py + ["geventchat.server", "--host", host, "--port", "0", "--quiet", "--no-presence",
                     "--max-clients", str(max(10_000, clients + 100)),
                     "--max-per-ip", str(max(10_000, clients + 100))]  # every client is on 127.0.0.1
    if name == "threaded":
        return py + ["bench.baselines.threaded_server", "--host", host, "--port", "0"]
    if name == "asyncio":
        return py + ["bench.baselines.asyncio_server", "--host", host, "--port", "0"]
    if name == "lossy":
        return py + ["bench.baselines.lossy_server", "--host", host, "--port", "0", "--drop-every", "10"]
    if name == "ncat":
        return ["ncat", "--chat", "-l", host, str(port), "--max-conns", str(clients + 100)]
    raise ValueError(f"unknown server {name!r}")


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server started by the benchmark; stopped by its PID with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, host: str = "127.0.0.1", clients: int = 100) -> None:
        self.name = name
        self.host = host
        self.clients = clients
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.output: list[str] = []
        self._ready = threading.Event()

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        port = free_port(self.host) if self.name == "ncat" else 0
        cmd = _command(self.name, self.host, port, self.clients)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        if self.name == "ncat":
            self.port = port
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection((self.host, port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                self.stop()
                raise RuntimeError(f"ncat did not listen on {self.host}:{port}")
            time.sleep(0.1)  # let ncat forget the probe connection
            return self
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self._ready.wait(0.05):
                return self
        tail = " | ".join(self.output[-3:])
        self.stop()
        raise RuntimeError(f"{self.name} server did not start: {tail or 'no output'}")

    def _drain(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if len(self.output) < 200:
                self.output.append(line)
            if not self._ready.is_set():
                m = _LISTEN_RE.search(line)
                if m:
                    self.port = int(m.group(2))
                    self._ready.set()

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def find_listener_pid(host: str, port: int) -> int:
    """PID of the process listening on host:port on this machine, or 0 if it cannot be seen."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except (psutil.AccessDenied, PermissionError, OSError):
        pass
    return 0


class ServerMeter:
    """CPU time and RSS of the server process (psutil), when its PID is known."""

    def __init__(self, pid: int) -> None:
        self.proc = None
        if pid:
            try:
                self.proc = psutil.Process(pid)
            except psutil.Error:
                self.proc = None

    def cpu(self) -> float | None:
        if self.proc is None:
            return None
        try:
            t = self.proc.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return None

    def rss(self) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.memory_info().rss
        except psutil.Error:
            return None
