"""One load-generator process: a share of the simulated clients on raw non-blocking sockets.

The hot path is the receive side. Every delivered chat line carries a fixed-width header
``#SSSSSQQQQQQQQQTTTTTTTTTT`` (sender id, sequence number, send time in microseconds since
the run's base on CLOCK_MONOTONIC, which is system-wide on Linux) anywhere in the line, so
the nickname format of the server does not matter. A received chunk is checked as a whole
with numpy (find the ``#`` bytes, gather the digits, stable-sort by sender, compare with the
next sequence number expected from each sender): no per-line Python work while everything
is in order. Only a chunk that is not (a loss, a duplicate, a reordering, a stray line) is
walked line by line to classify what went wrong.

With ``protocol="irc"`` the clients are IRC clients: each registers (NICK/USER, waits for
001), joins one channel (waits for the end of its NAMES, 366), answers the server's PINGs,
and senders send ``PRIVMSG #CHANNEL :=HEADER...``. The header's mark is ``=`` there (a
``#`` begins every channel name); what comes before it (``:nick!user@host PRIVMSG #chan :``)
is never parsed on the hot path, so any server's prefixes do.

Senders keep a bounded window: a sender may be at most ``window`` messages ahead of what one
designated receiver in the same process has seen from it, so the generator measures the
relay rather than how fast it can fill socket buffers.
"""

from __future__ import annotations

import errno
import os
import re
import selectors
import socket
import time
from dataclasses import dataclass

import numpy as np

SID_W, SEQ_W, TS_W = 5, 9, 10
HEADER = 1 + SID_W + SEQ_W + TS_W  # "#" and the digits
KEY_SCALE = 10**SEQ_W  # key = sid * KEY_SCALE + seq
MAX_SENDERS = 10**SID_W
RECV_SIZE = 64 * 1024  # not more: glibc serves bigger blocks with mmap, 5x slower per recv
MAX_PARTIAL = 1 << 20
SMALL_CHUNK = (
    24  # up to this many lines a chunk is checked in plain Python  # a "line" longer than this is garbage: count it and drop it
)

_OFFSETS = np.arange(1, HEADER, dtype=np.intp)
_P_KEY = np.array([10**i for i in range(SID_W + SEQ_W - 1, -1, -1)], dtype=np.int64)
_P_TS = np.array([10**i for i in range(TS_W - 1, -1, -1)], dtype=np.int64)
_HASH = 35  # ord("#")
_EQUALS = 61  # ord("="): the mark in IRC mode, where "#" begins every channel name
MARKS = {"line": _HASH, "irc": _EQUALS}
PROTOCOLS = tuple(MARKS)
CHANNEL = "bench"  # the one room (IRC channel #bench) of an IRC run

# IRC replies that end a client's registration or its JOIN: the line is its failure
_IRC_FATAL = frozenset(
    b"ERROR 403 405 431 432 433 436 437 451 461 462 463 464 465 471 473 474 475 476 477 481 489 491 501 502".split()
)


def _line_re(mark: int) -> re.Pattern:
    return re.compile(re.escape(bytes([mark])) + rb"(\d{%d})(\d{%d})(\d{%d})" % (SID_W, SEQ_W, TS_W))


def format_message(sid: int, seq: int, ts_us: int, pad: bytes = b"", mark: bytes = b"#") -> bytes:
    """One chat line's text as a sender writes it: header, padding, newline."""
    return b"%s%05d%09d%010d%s\n" % (mark, sid, seq, ts_us, pad)


def irc_nick(idx: int) -> bytes:
    return b"b%05d" % idx


def irc_command(line: bytes) -> tuple[bytes, bytes]:
    """(command, the rest) of one IRC line without its line ending; a source is skipped."""
    if line.startswith(b"@"):  # message tags
        line = line.partition(b" ")[2].lstrip(b" ")
    if line.startswith(b":"):
        line = line.partition(b" ")[2].lstrip(b" ")
    command, _, rest = line.partition(b" ")
    return command.upper(), rest


@dataclass
class Plan:
    """What one worker does; the same numbers for every worker but its client indices."""

    host: str
    port: int  # the first of ports
    indices: list  # global client indices handled by this worker
    clients: int  # N, all workers
    senders: int  # S: clients 0..S-1 send
    messages: int  # M per sender
    size: int  # bytes of each message, without the newline
    window: int  # messages in flight per sender
    rate: float  # messages per second per sender, 0 = as fast as the window allows
    base_ns: int  # time.monotonic_ns() origin of the timestamps
    connect_batch: int
    connect_timeout: float
    sample_every: int  # keep every Nth latency sample (1 = all)
    coalesce: float = 0.0  # seconds to wait when lines arrive one per read (0 = never)
    run_limit: float = 3600.0  # seconds after "go" when the worker stops by itself
    ports: tuple = ()  # several ports (several server processes): client i uses ports[i % len]
    protocol: str = "line"  # or "irc": register, JOIN #CHANNEL, PRIVMSG, answer PINGs
    irc_login: str = ""  # IRC lines sent after 001, before JOIN ({nick}: the client's nick)
    room: str = ""  # line protocol: /join this room after the welcome ("": stay in lobby)


class Client:
    __slots__ = (
        "idx",
        "sock",
        "fd",
        "partial",
        "nx",
        "got",
        "expected",
        "lines",
        "joined",
        "dead",
        "sid",
        "sent",
        "out",
        "ack",
        "acks_for",
        "missing",
        "sender_base",
        "registered",
    )

    def __init__(self, idx: int, senders: int, messages: int) -> None:
        self.idx = idx
        self.sock: socket.socket | None = None
        self.fd = -1
        self.partial = b""
        self.got = 0  # distinct chat lines delivered (in order or not)
        self.lines = 0  # every line received, chat or not
        self.joined = False
        self.dead = ""
        self.sid = idx if idx < senders else -1
        self.expected = messages * (senders - (1 if self.sid >= 0 else 0))
        # next key expected from each sender; a sender never expects its own lines
        self.nx = np.arange(senders, dtype=np.int64) * KEY_SCALE
        if self.sid >= 0:
            self.nx[self.sid] = -1
        self.missing: dict[int, set] | None = None
        self.sent = 0
        self.out = b""
        self.ack: Client | None = None  # designated receiver for this sender's window
        self.acks_for: list[Client] = []
        self.sender_base = self.sid * KEY_SCALE
        self.registered = False  # IRC: 001 seen, JOIN sent; line protocol with a room: /join sent


class Stats:
    def __init__(self, sample_every: int) -> None:
        self.duplicates = 0
        self.line_count = 0
        self.reordered = 0
        self.unexpected = 0  # echoes to the sender, unknown senders, garbled headers
        self.other_lines = 0  # lines without a header: welcome, presence, notices
        self.lat_max = 0
        self.lat_samples: list[np.ndarray] = []
        self.lat_small: list[int] = []  # samples from small chunks, as Python ints
        self.lat_count = 0
        self.sample_every = sample_every
        self.first_recv_ns = 0
        self.last_recv_ns = 0


class Worker:
    def __init__(self, plan: Plan, control) -> None:
        self.plan = plan
        self.control = control
        self.sel = selectors.DefaultSelector()
        self.stats = Stats(plan.sample_every)
        self.clients = [Client(i, plan.senders, plan.messages) for i in plan.indices]
        self.senders = [c for c in self.clients if c.sid >= 0]
        local = self.clients
        for pos, c in enumerate(local):
            if c.sid >= 0:
                # the next client of this process watches this sender's window
                c.ack = local[(pos + 1) % len(local)] if len(local) > 1 else None
                if c.ack is not None:
                    c.ack.acks_for.append(c)
        self.pad = b"x" * (plan.size - HEADER)
        self.stopping = False
        self.go = False
        self.t_go_ns = 0
        self.S = plan.senders
        self.irc = plan.protocol == "irc"
        self.mark = MARKS[plan.protocol]
        self.line_re = _line_re(self.mark)
        # what goes before each message's text (IRC: the PRIVMSG command), and its end
        self.prefix = (b"PRIVMSG #%s :" % CHANNEL.encode()) if self.irc else b""
        self.eol = b"\r\n" if self.irc else b"\n"
        # line protocol with a room: a client counts as joined at the server's "*** You are
        # now in ROOM" (nothing of the run is sent before every client has joined)
        self.room_ack = b"*** You are now in %s\n" % plan.room.encode() if plan.room and not self.irc else b""

    # ------------------------------------------------------------------ connecting
    def connect_all(self) -> tuple[int, int, int, str]:
        plan = self.plan
        t0 = time.monotonic_ns()
        deadline = time.monotonic() + plan.connect_timeout
        failed = 0
        first_error = ""
        batch = max(1, plan.connect_batch)
        for start in range(0, len(self.clients), batch):
            group = self.clients[start : start + batch]
            for c in group:
                s = socket.socket(socket.AF_INET6 if ":" in plan.host else socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                port = plan.ports[c.idx % len(plan.ports)] if plan.ports else plan.port
                err = s.connect_ex((plan.host, port))
                if err not in (0, errno.EINPROGRESS):
                    c.dead = os.strerror(err)
                    s.close()
                    continue
                c.sock = s
                c.fd = s.fileno()
                if self.irc:  # written once the connect completes (the socket turns writable)
                    nick = irc_nick(c.idx)
                    c.out = b"NICK %s\r\nUSER %s 0 * :geventchat bench\r\n" % (nick, nick)
                    self.sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
                else:
                    self.sel.register(s, selectors.EVENT_READ, c)
            while time.monotonic() < deadline:
                pending = [c for c in group if not c.joined and not c.dead]
                if not pending:
                    break
                self.poll(0.05)
            for c in group:
                if not c.joined and not c.dead:
                    c.dead = (
                        "no end of NAMES (366) before the connect timeout"
                        if self.irc
                        else f"no reply to /join {plan.room} before the connect timeout"
                        if c.registered
                        else "no welcome line before the connect timeout"
                    )
                if c.dead:
                    failed += 1
                    first_error = first_error or c.dead
            if time.monotonic() >= deadline:
                for c in self.clients[start + batch :]:
                    c.dead = c.dead or "connect timeout"
                    failed += 1
                break
        return t0, time.monotonic_ns(), failed, first_error

    # ------------------------------------------------------------------ the loop
    def poll(self, timeout: float) -> int:
        """One round of the event loop; returns how many sockets were read."""
        events = self.sel.select(timeout)
        for key, _events in events:
            c = key.data
            if c is None:
                self.on_control()
                continue
            if _events & selectors.EVENT_WRITE and c.out:
                self.flush(c)
            if not _events & selectors.EVENT_READ:
                continue
            try:
                data = c.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                self.kill(c, f"recv: {exc.strerror or exc}")
                continue
            if not data:
                self.kill(c, "closed by server")
                continue
            self.on_data(c, data)
            if self.go and c.acks_for:
                for s in c.acks_for:
                    self.pump(s)
        return len(events)

    def kill(self, c: Client, why: str) -> None:
        if not c.dead:
            c.dead = why
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def on_control(self) -> None:
        while self.control.poll():
            try:
                msg = self.control.recv()
            except (EOFError, OSError):  # the parent is gone: stop
                self.stopping = True
                return
            if msg[0] == "go":
                self.go = True
                self.t_go_ns = msg[1]
                for s in self.senders:
                    self.pump(s)
            elif msg[0] == "stop":
                self.stopping = True

    # ------------------------------------------------------------------ receiving
    def on_data(self, c: Client, data: bytes) -> None:
        if c.partial:
            data = c.partial + data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            c.partial = data if len(data) <= MAX_PARTIAL else b""
            return
        c.partial = data[cut:]
        n = data.count(b"\n", 0, cut)
        c.lines += n
        self.stats.line_count += n
        if self.irc:
            if not c.joined:
                return self.irc_handshake(c, data, cut)
            if data.find(b"PING", 0, cut) >= 0:  # a memchr-speed scan; chat text never has it
                self.answer_pings(c, data, cut)
        elif not c.joined:
            if data.startswith(b"*** Error"):  # refused: "server full", "too many ... address"
                self.kill(c, data[: data.find(b"\n")].decode("utf-8", "replace"))
                return
            if self.room_ack:
                return self.join_room(c, data, cut, n)
            c.joined = True
        st = self.stats
        now_ns = time.monotonic_ns()
        if n <= SMALL_CHUNK:
            return self.small(c, data, cut, n, now_ns)
        a = np.frombuffer(data, np.uint8, cut)
        h = np.flatnonzero(a == self.mark)
        nh = h.size
        if nh == 0:
            st.other_lines += n
            return
        st.last_recv_ns = now_ns
        if not st.first_recv_ns:
            st.first_recv_ns = now_ns
        if nh > n or h[-1] + HEADER > cut:
            return self.slow(c, data, cut, now_ns)
        d = a[h[:, None] + _OFFSETS]
        if d.max() > 57 or d.min() < 48:
            return self.slow(c, data, cut, now_ns)
        d = d.astype(np.int64)
        d -= 48
        key = d[:, : SID_W + SEQ_W] @ _P_KEY
        ts = d[:, SID_W + SEQ_W :] @ _P_TS
        S = self.S
        if nh == 1:
            k = int(key[0])
            sid = k // KEY_SCALE
            if sid >= S or c.nx[sid] != k:
                return self.slow(c, data, cut, now_ns)
            c.nx[sid] = k + 1
        else:
            sid = key // KEY_SCALE
            if sid[-1] >= S or sid.max() >= S:
                return self.slow(c, data, cut, now_ns)
            order = np.argsort(sid, kind="stable")
            ss = sid[order]
            cnt = np.bincount(ss, minlength=S)
            starts = np.cumsum(cnt)
            starts -= cnt
            expect = c.nx[ss]
            expect += np.arange(nh)
            expect -= starts[ss]
            if not np.array_equal(expect, key[order]):
                return self.slow(c, data, cut, now_ns)
            c.nx += cnt
        c.got += nh
        st.other_lines += n - nh
        lat = (now_ns - self.plan.base_ns) // 1000 - ts
        m = int(lat.max())
        if m > st.lat_max:
            st.lat_max = m
        st.lat_count += nh
        if st.sample_every > 1:
            lat = lat[:: st.sample_every]
        st.lat_samples.append(lat.astype(np.int32))

    def small(self, c: Client, data: bytes, cut: int, n: int, now_ns: int) -> None:
        """A chunk of a few lines: plain Python beats numpy's fixed cost per call here."""
        st = self.stats
        S = self.S
        nx = c.nx
        seen = {}
        stamps = []
        mark = b"=" if self.irc else b"#"
        pos = data.find(mark, 0, cut)
        while pos >= 0:
            end = pos + HEADER
            hdr = data[pos + 1 : end]
            if end > cut or not hdr.isdigit():
                return self.slow(c, data, cut, now_ns)
            k = int(hdr[: SID_W + SEQ_W])
            sid = k // KEY_SCALE
            if sid >= S:
                return self.slow(c, data, cut, now_ns)
            e = seen.get(sid)
            if e is None:
                e = int(nx[sid])
            if e != k:
                return self.slow(c, data, cut, now_ns)
            seen[sid] = k + 1
            stamps.append(int(hdr[SID_W + SEQ_W :]))
            pos = data.find(mark, end, cut)
        nh = len(stamps)
        if nh > n:
            return self.slow(c, data, cut, now_ns)
        st.other_lines += n - nh
        if not nh:
            return
        st.last_recv_ns = now_ns
        if not st.first_recv_ns:
            st.first_recv_ns = now_ns
        for sid, v in seen.items():
            nx[sid] = v
        c.got += nh
        now_us = (now_ns - self.plan.base_ns) // 1000
        m = now_us - min(stamps)
        if m > st.lat_max:
            st.lat_max = m
        every = st.sample_every
        for t in stamps:
            st.lat_count += 1
            if every == 1 or st.lat_count % every == 0:
                st.lat_small.append(now_us - t)

    def slow(self, c: Client, data: bytes, cut: int, now_ns: int) -> None:
        """Classify a chunk that is not simply in order, one line at a time."""
        st = self.stats
        S = self.S
        M = self.plan.messages
        now_us = (now_ns - self.plan.base_ns) // 1000
        lats = []
        if c.missing is None:
            c.missing = {}
        for line in data[:cut].split(b"\n")[:-1]:
            m = self.line_re.search(line)
            if m is None:
                if self.irc:
                    chat = irc_command(line)[0] == b"PRIVMSG"  # a chat line without a header
                else:
                    chat = b"#" in line and not line.startswith(b"***")
                if chat:
                    st.unexpected += 1
                else:
                    st.other_lines += 1
                continue
            sid, seq, ts = int(m.group(1)), int(m.group(2)), int(m.group(3))
            if sid >= S or sid == c.sid or seq >= M:
                st.unexpected += 1
                continue
            lats.append(now_us - ts)
            base = sid * KEY_SCALE
            nxt = int(c.nx[sid]) - base
            if seq == nxt:
                c.nx[sid] += 1
                c.got += 1
            elif seq > nxt:
                c.missing.setdefault(sid, set()).update(range(nxt, seq))
                c.nx[sid] = base + seq + 1
                c.got += 1
            else:
                miss = c.missing.get(sid)
                if miss and seq in miss:
                    miss.discard(seq)
                    st.reordered += 1
                    c.got += 1
                else:
                    st.duplicates += 1
        if lats:
            arr = np.array(lats, dtype=np.int64)
            st.lat_max = max(st.lat_max, int(arr.max()))
            st.lat_count += arr.size
            if st.sample_every > 1:
                arr = arr[:: st.sample_every]
            st.lat_samples.append(arr.astype(np.int32))

    def join_room(self, c: Client, data: bytes, cut: int, n: int) -> None:
        """--room: the welcome asks for the room; its confirmation makes the client joined.
        Nothing of the run comes before every client has joined: these are no deliveries."""
        self.stats.other_lines += n
        if not c.registered:  # the welcome (and maybe presence): ask for the room
            c.registered = True
            self.send_raw(c, b"/join %s\n" % self.plan.room.encode())
        if data.find(self.room_ack, 0, cut) >= 0:
            c.joined = True
            return
        error = data.find(b"*** Error", 0, cut)
        if error >= 0:  # the room's name refused, or a server without /join
            self.kill(c, data[error : data.find(b"\n", error)].decode("utf-8", "replace"))

    # ------------------------------------------------------------------ IRC
    def irc_handshake(self, c: Client, data: bytes, cut: int) -> None:
        """Registration and JOIN, one line at a time (only while connecting)."""
        lines = data[:cut].split(b"\n")[:-1]
        for pos, raw in enumerate(lines):
            line = raw.rstrip(b"\r")
            command, rest = irc_command(line)
            if command == b"PING":
                self.send_raw(c, b"PONG %s\r\n" % rest)
            elif command == b"001" and not c.registered:
                c.registered = True
                login = self.plan.irc_login.format(nick=irc_nick(c.idx).decode()).encode()
                self.send_raw(c, login + b"JOIN #%s\r\n" % CHANNEL.encode())
            elif command == b"366":
                c.joined = True
                self.stats.other_lines += len(lines) - pos
                return
            elif command in _IRC_FATAL:
                self.kill(c, line.decode("utf-8", "replace")[:200])
                return
        self.stats.other_lines += len(lines)

    def answer_pings(self, c: Client, data: bytes, cut: int) -> None:
        """PONG each PING line of a chunk (a server drops a client that does not answer)."""
        pos = data.find(b"PING", 0, cut)
        while pos >= 0:
            start = data.rfind(b"\n", 0, pos) + 1
            end = data.find(b"\n", pos, cut)
            command, rest = irc_command(data[start:end].rstrip(b"\r"))
            if command == b"PING":
                self.send_raw(c, b"PONG %s\r\n" % rest)
            pos = data.find(b"PING", end, cut)

    def send_raw(self, c: Client, buf: bytes) -> None:
        """Protocol lines (PONG, JOIN): after whatever is already waiting to be written."""
        if c.dead:
            return
        if c.out:
            c.out += buf
        else:
            self.write(c, buf)

    # ------------------------------------------------------------------ sending
    def pump(self, s: Client) -> None:
        if s.dead or s.out:
            return
        plan = self.plan
        allowed = plan.messages
        if s.ack is not None:
            acked = int(s.ack.nx[s.sid]) - s.sender_base
            allowed = min(allowed, acked + plan.window)
        if plan.rate > 0:
            elapsed = (time.monotonic_ns() - self.t_go_ns) / 1e9
            allowed = min(allowed, int(elapsed * plan.rate) + 1)
        if s.sent >= allowed:
            return
        ts = (time.monotonic_ns() - plan.base_ns) // 1000
        sid = s.sid
        pad = self.pad
        if self.irc:
            head, eol = self.prefix, self.eol
            buf = b"".join([b"%s=%05d%09d%010d%s%s" % (head, sid, q, ts, pad, eol) for q in range(s.sent, allowed)])
        else:
            buf = b"".join([b"#%05d%09d%010d%s\n" % (sid, q, ts, pad) for q in range(s.sent, allowed)])
        s.sent = allowed
        self.write(s, buf)

    def write(self, s: Client, buf: bytes) -> None:
        try:
            n = s.sock.send(buf)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self.kill(s, f"send: {exc.strerror or exc}")
            return
        if n < len(buf):
            s.out = buf[n:]
            self.sel.modify(s.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, s)

    def flush(self, s: Client) -> None:
        buf, s.out = s.out, b""
        self.sel.modify(s.sock, selectors.EVENT_READ, s)
        self.write(s, buf)
        if not s.out and self.go and s.sid >= 0:
            self.pump(s)

    # ------------------------------------------------------------------ summary
    def done(self) -> bool:
        for c in self.clients:
            if not c.dead and c.got < c.expected:
                return False
        return True

    def delivered(self) -> int:
        return sum(c.got for c in self.clients)

    def result(self, cpu_s: float) -> dict:
        st = self.stats
        lost = 0
        dead = 0
        for c in self.clients:
            lost += max(0, c.expected - c.got)
            dead += bool(c.dead)
        st.lat_samples.append(np.array(st.lat_small, dtype=np.int32))
        samples = np.concatenate(st.lat_samples)
        return {
            "delivered": self.delivered(),
            "expected": sum(c.expected for c in self.clients),
            "lost": lost,
            "duplicates": st.duplicates,
            "reordered": st.reordered,
            "unexpected": st.unexpected,
            "other_lines": st.other_lines,
            "sent": sum(s.sent for s in self.senders),
            "lat_max_us": st.lat_max,
            "lat_count": st.lat_count,
            "lat_samples_us": samples,
            "first_recv_ns": st.first_recv_ns,
            "last_recv_ns": st.last_recv_ns,
            "cpu_s": cpu_s,
            "disconnected": dead,
            "first_disconnect": next((c.dead for c in self.clients if c.dead), ""),
        }


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def run_worker(plan: Plan, control) -> None:
    """Entry point of a worker process; talks to the parent over ``control`` (a Pipe end)."""
    w = Worker(plan, control)
    t0, t1, failed, err = w.connect_all()
    control.send(("connected", t0, t1, failed, err))
    w.sel.register(control, selectors.EVENT_READ, None)
    # wait for "go", keep reading (late notices) meanwhile
    limit = time.monotonic() + plan.connect_timeout + 120
    while not w.go and not w.stopping and time.monotonic() < limit:
        w.poll(0.1)
    cpu0 = _cpu()
    next_report = 0.0
    limit = time.monotonic() + plan.run_limit
    timeout = 0.002 if plan.rate > 0 else 0.05
    lines = 0
    while not w.stopping and time.monotonic() < limit:
        reads = w.poll(timeout)
        if plan.coalesce > 0 and reads > 8:
            # lines trickling in one per read cost a system call and a loop pass each:
            # give them a moment to gather (bounded: at most `coalesce` seconds per round)
            total = w.stats.line_count
            if total - lines < 4 * reads:
                time.sleep(plan.coalesce)
            lines = total
        if plan.rate > 0:
            for s in w.senders:
                w.pump(s)
        now = time.monotonic()
        if now >= next_report:
            next_report = now + 0.2
            control.send(("progress", w.delivered(), sum(s.sent for s in w.senders), w.done()))
    cpu1 = _cpu()
    control.send(("result", w.result(cpu1 - cpu0)))
    for c in w.clients:
        if c.sock is not None:
            try:
                c.sock.close()
            except OSError:
                pass
