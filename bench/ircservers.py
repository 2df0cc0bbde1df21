"""Real IRC servers from Debian (ngircd, InspIRCd) as references for ``--protocol irc``.

Each is started with a configuration written to a fresh temporary directory, as an
operator would set one up for a load test on one machine: one listener on the loopback
address, no DNS or ident lookups, no TLS, connection limits per address and in all far
above the benchmark's clients, flood penalties off, send and receive queues raised, ping
intervals long. docs/benchmark-irc.md gives the reasons setting by setting.
"""

from __future__ import annotations

import os
import shutil
import tempfile

IRC_REFERENCES = ("ngircd", "inspircd")
BINARIES = {"ngircd": "ngircd", "inspircd": "inspircd"}

# ngircd throttles every user that has more than 3 commands waiting (1 s before it reads
# on) whatever MaxPenaltyTime says; only user mode +F ("relaxed flood protection"), which
# only an IRC operator may set, lifts that. So each client becomes an operator and sets it,
# between its welcome (001) and its JOIN. {nick} is the client's nickname.
OPER_NAME, OPER_PASSWORD = "bench", "bench-load-test"
LOGIN_LINES = {"ngircd": f"OPER {OPER_NAME} {OPER_PASSWORD}\r\nMODE {{nick}} +F\r\n"}


def login_lines(name: str) -> str:
    """IRC lines each benchmark client sends after 001, before its JOIN ("" for none)."""
    return LOGIN_LINES.get(name, "")


def available(name: str) -> bool:
    return shutil.which(BINARIES[name]) is not None or os.path.exists(f"/usr/sbin/{BINARIES[name]}")


def _binary(name: str) -> str:
    return shutil.which(BINARIES[name]) or f"/usr/sbin/{BINARIES[name]}"


def ngircd_config(host: str, port: int, clients: int, tmp: str) -> str:
    empty = os.path.join(tmp, "conf.d")  # not the system's /etc/ngircd/ngircd.conf.d
    os.makedirs(empty, exist_ok=True)
    return f"""\
# Written by python -m bench --protocol irc; see docs/benchmark-irc.md
[Global]
Name = bench.ngircd.local
Info = geventchat benchmark reference
AdminInfo1 = geventchat benchmark
AdminInfo2 = loopback only
AdminEMail = bench@localhost
Listen = {host}
Ports = {port}
MotdPhrase = geventchat benchmark reference server
PidFile = {os.path.join(tmp, "ngircd.pid")}

[Limits]
# 0: no limit on connections in all and from one address (every client is on 127.0.0.1)
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 31
# 0: command penalties ("flood protection" by delaying a client's reads) off altogether
MaxPenaltyTime = 0
# the receivers never speak: a ping every 10 minutes, answered by the load generator
PingTimeout = 600
PongTimeout = 120

[Operator]
Name = {OPER_NAME}
Password = {OPER_PASSWORD}
Mask = *!*@127.0.0.1

[Options]
DNS = no
Ident = no
PAM = no
IncludeDir = {empty}
"""


def inspircd_config(host: str, port: int, clients: int, tmp: str) -> str:
    motd = os.path.join(tmp, "motd.txt")
    with open(motd, "w", encoding="utf-8") as fh:
        fh.write("geventchat benchmark reference server\n")
    limit = max(10_000, clients * 2)
    return f"""\
# Written by python -m bench --protocol irc; see docs/benchmark-irc.md
<server name="bench.inspircd.local" description="geventchat benchmark reference" network="bench">
<admin name="geventchat benchmark" nick="bench" email="bench@localhost">
<bind address="{host}" port="{port}" type="clients">
<connect name="bench" allow="*"
         timeout="60" pingfreq="10m"
         fakelag="no" threshold="1000000" commandrate="100000000"
         hardsendq="64M" softsendq="64M" recvq="1M"
         localmax="{limit}" globalmax="{limit}" limit="{limit}" maxconnwarn="no"
         resolvehostnames="no" useident="no" maxchans="100">
<performance softlimit="{limit}" somaxconn="1024" netbuffersize="65536" clonesonconnect="no">
<files motd="{motd}">
<pid file="{os.path.join(tmp, "inspircd.pid")}">
<dns timeout="1">
<options>
<security>
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{os.path.join(tmp, "inspircd.log")}">
"""


class IrcConfig:
    """A temporary directory holding one server's configuration; removed by ``cleanup``."""

    def __init__(self, name: str, host: str, port: int, clients: int) -> None:
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"bench-{name}-")
        os.chmod(self.dir, 0o755)  # ngircd reads it after dropping root to "nobody"
        writer = ngircd_config if name == "ngircd" else inspircd_config
        self.path = os.path.join(self.dir, f"{name}.conf")
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.write(writer(host, port, clients, self.dir))
        os.chmod(self.path, 0o644)

    def command(self) -> list[str]:
        if self.name == "ngircd":
            return [_binary("ngircd"), "--nodaemon", "--config", self.path]
        # --runasroot: InspIRCd refuses root otherwise (the CI container runs as root)
        args = [_binary("inspircd"), f"--config={self.path}", "--nofork", "--nopid"]
        if os.geteuid() == 0:
            args.append("--runasroot")
        return args

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
