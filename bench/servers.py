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

from bench import ircservers

_LISTEN_RE = re.compile(r"Server listening on (\S+):(\d+)")
_IRC_LISTEN_RE = re.compile(r"IRC listening on (\S+):(\d+)")

# name -> how to start it on a free port (None: the port is chosen here, see ncat)
SERVER_NAMES = ("geventchat", "threaded", "asyncio", "ncat", "lossy")
# the servers that speak each protocol (--protocol)
PROTOCOL_SERVERS = {"line": SERVER_NAMES, "irc": ("geventchat",) + ircservers.IRC_REFERENCES}
# listening on a port chosen here, found ready by connecting to it
_PORT_CHOSEN_HERE = ("ncat",) + ircservers.IRC_REFERENCES

# "geventchat@DIR": geventchat as the source tree DIR has it (a worktree of another
# commit, say), to measure one commit against another side by side in one run.
OTHER_TREE = "geventchat@"


def source_tree(name: str) -> str | None:
    """The source tree a ``geventchat@DIR`` server runs from (None: this repository's)."""
    return os.path.abspath(os.path.expanduser(name[len(OTHER_TREE) :])) if name.startswith(OTHER_TREE) else None


def is_geventchat(name: str) -> bool:
    """geventchat, from this repository or from another source tree."""
    return name == "geventchat" or name.startswith(OTHER_TREE)


def available(name: str) -> bool:
    tree = source_tree(name)
    if tree is not None:
        return os.path.isfile(os.path.join(tree, "geventchat", "server", "__main__.py"))
    if name in ircservers.IRC_REFERENCES:
        return ircservers.available(name)
    if name == "ncat":
        return shutil.which("ncat") is not None
    if name == "geventchat":
        try:
            import importlib.util

            return importlib.util.find_spec("geventchat.server") is not None
        except ImportError:
            return False
    return name in SERVER_NAMES


def _command(name: str, host: str, port: int, clients: int, workers: int = 0, redis_url: str = "") -> list[str]:
    py = [sys.executable, "-m"]
    if is_geventchat(name):
        # --max-clients leaves room above the benchmark's clients
        cmd = py + [
            "geventchat.server",
            "--host",
            host,
            "--port",
            "0",
            "--quiet",
            "--no-presence",
            "--max-clients",
            str(max(10_000, clients + 100)),
            "--max-per-ip",
            str(max(10_000, clients + 100)),
        ]  # every client is on 127.0.0.1
        if workers:
            cmd += ["--workers", str(workers), "--redis-url", redis_url]
        return cmd
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

    def __init__(
        self,
        name: str,
        host: str = "127.0.0.1",
        clients: int = 100,
        workers: int = 0,
        redis_url: str = "",
        protocol: str = "line",
        extra_args: tuple = (),
    ) -> None:
        self.name = name
        self.protocol = protocol  # "irc": geventchat with --irc-port; self.port is the IRC port
        self.extra_args = tuple(extra_args)  # geventchat only: more server flags
        self.irc_config: ircservers.IrcConfig | None = None
        self.host = host
        self.clients = clients
        self.workers = workers  # geventchat only: 0 = one process without Redis
        self.redis_url = redis_url
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.output: list[str] = []
        self._ready = threading.Event()

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self, timeout: float = 20.0) -> ServerProcess:
        port = free_port(self.host) if self.name in _PORT_CHOSEN_HERE else 0
        if self.name in ircservers.IRC_REFERENCES:
            self.irc_config = ircservers.IrcConfig(self.name, self.host, port, self.clients)
            cmd = self.irc_config.command()
        else:
            cmd = _command(self.name, self.host, port, self.clients, self.workers, self.redis_url)
        if is_geventchat(self.name):
            cmd += list(self.extra_args)
            if self.protocol == "irc":
                cmd += ["--irc-port", "0"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        tree = source_tree(self.name)
        if tree is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (tree, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tree or os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        if self.name in _PORT_CHOSEN_HERE:
            self.port = port
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection((self.host, port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                tail = " | ".join(self.output[-3:])
                self.stop()
                raise RuntimeError(f"{self.name} did not listen on {self.host}:{port}: {tail or 'no output'}")
            time.sleep(0.1)  # let the server forget the probe connection
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
                m = (_IRC_LISTEN_RE if self.protocol == "irc" else _LISTEN_RE).search(line)
                if m:
                    self.port = int(m.group(2))
                    self._ready.set()

    def stop(self, timeout: float = 10.0) -> int | None:
        try:
            if self.proc is None or self.proc.poll() is not None:
                return self.proc.returncode if self.proc else None
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(5)
        finally:
            if self.irc_config is not None:
                self.irc_config.cleanup()

    def __enter__(self) -> ServerProcess:
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


class RedisProcess:
    """A redis-server for ``--workers`` runs: a free port on 127.0.0.1, nothing saved to
    disk, stopped by its PID."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("--workers needs redis-server (on Debian: apt-get install redis-server)")
        self.port = free_port(self.host)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on {self.host}:{self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class ServerMeter:
    """CPU time and RSS of the server (psutil), when its PID is known: the process and
    every process under it, so that a ``--workers`` server counts all its workers."""

    def __init__(self, pid: int) -> None:
        self.proc = None
        if pid:
            try:
                self.proc = psutil.Process(pid)
            except psutil.Error:
                self.proc = None

    def _tree(self) -> list:
        try:
            return [self.proc] + self.proc.children(recursive=True)
        except psutil.Error:
            return []

    def processes(self) -> int:
        return len(self._tree()) if self.proc is not None else 0

    def cpu(self) -> float | None:
        if self.proc is None:
            return None
        total, seen = 0.0, False
        for proc in self._tree():
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue  # ended meanwhile
            total += t.user + t.system
            seen = True
        return total if seen else None

    def rss(self) -> int | None:
        if self.proc is None:
            return None
        total, seen = 0, False
        for proc in self._tree():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
            seen = True
        return total if seen else None
