"""The account service with a real store (an SQLite file) and real argon2id hashing, its
members plain objects: what only an address that is not loopback shows (the warning),
the rehash of an old hash, and the loopback test of the line door."""

from __future__ import annotations

import pytest

from geventchat.chat import commands
from geventchat.chat.accounts import Accounts, PasswordHasher
from geventchat.chat.hub import Hub
from geventchat.core import protocol
from geventchat.doors.session import _is_loopback
from geventchat.stores.accounts import SqliteAccountStore

PASSWORD = "correct-horse-9"
WARNING = "*** Warning: this connection is not encrypted"


class Member:
    def __init__(self, host: str, port: int, exposed: bool) -> None:
        self.nick = ""
        self.room = None
        self.account = None
        self.address = (host, port)
        self.exposed = exposed
        self.lines: list[str] = []

    def deliver(self, data: bytes) -> None:
        self.lines.append(data.decode().rstrip("\n"))

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


def run(hub: Hub, member: Member, line: str) -> list[str]:
    request = protocol.parse_line(line)
    assert isinstance(request, protocol.Command)
    commands.dispatch(hub, member, request)
    return member.take()


@pytest.fixture
def hub(tmp_path):
    hub = Hub(presence=False)
    hub.accounts = Accounts(SqliteAccountStore(str(tmp_path / "chat.db")), hub.stats)
    yield hub
    hub.accounts.close()


def test_from_an_address_that_is_not_loopback_replies_warn(hub):
    far = Member("192.0.2.10", 40001, exposed=True)
    near = Member("127.0.0.1", 40002, exposed=False)
    hub.add(far, "40001")
    hub.add(near, "40002")
    far.take(), near.take()
    run(hub, far, "/nick zoe")
    assert run(hub, far, f"/register {PASSWORD}") == ["*** zoe is now registered and you are logged in", WARNING]
    assert run(hub, far, f"/password {PASSWORD} other-pass-1") == ["*** Password changed", WARNING]
    assert run(hub, far, "/logout") == ["*** You are logged out"]
    assert run(hub, near, "/login zoe other-pass-1") == [
        "*** You are now known as zoe",
        "*** You are now logged in as zoe",
    ]  # loopback: no warning
    assert far.take()[0] == "*** You were logged out: zoe logged in from another connection"
    assert run(hub, far, "/login zoe other-pass-1") == [
        "*** You are now known as zoe",
        "*** You are now logged in as zoe",
        WARNING,
    ]
    assert run(hub, far, "/login zoe wrong-pass-1") == ["*** Error: wrong nickname or password"]


def test_a_hash_made_with_other_parameters_is_replaced_at_login(hub):
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024)
    old_hash = weak.hash(PASSWORD)
    weak.close()
    assert hub.accounts.store.create("yan", "yan", old_hash)
    member = Member("127.0.0.1", 40003, exposed=False)
    hub.add(member, "40003")
    member.take()
    assert run(hub, member, f"/login yan {PASSWORD}")[-1] == "*** You are now logged in as yan"
    new_hash = hub.accounts.store.get_hash("yan")
    assert new_hash != old_hash and "m=19456,t=2,p=1" in new_hash
    assert not hub.accounts.hasher.needs_rehash(new_hash)


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("2001:db8::1", False),
    ],
)
def test_loopback_addresses(host, loopback):
    assert _is_loopback(host) is loopback
