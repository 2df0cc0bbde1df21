"""The sans-IO rules of accounts: passwords, registrable names, secret lines, the limiter."""

from __future__ import annotations

import pytest

from geventchat.core.accountrules import (
    LoginLimiter,
    address_key,
    is_secret_line,
    lockout_message,
    password_problem,
    registrable,
    secret_start,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("password", ["12345678", "x" * 128, "pässwörd", "a-b_c.d!e"])
def test_good_passwords(password):
    assert password_problem(password) is None


@pytest.mark.parametrize("password", ["", "1234567", "x" * 129, "has space", "tab\there1", "nbsp\u00a0here"])
def test_bad_passwords_say_why_without_the_password(password):
    problem = password_problem(password)
    assert problem
    assert password.strip() == "" or password not in problem


def test_all_digit_names_cannot_be_registered():
    assert not registrable("51044")
    assert registrable("alice")
    assert not registrable("51044-2")  # the variant a connection gets when 51044 is taken
    assert registrable("51044-bob")
    assert registrable("2-fast")
    assert registrable("a1")


@pytest.mark.parametrize(
    "line", ["/register secret12", "/login alice secret12", "/password a b", "/LOGIN x y", "  /Register z", "/login"]
)
def test_secret_lines(line):
    assert is_secret_line(line)


@pytest.mark.parametrize("line", ["hello", "//login alice pw", "/nick alice", "/logout", "login alice pw", "/", ""])
def test_not_secret_lines(line):
    assert not is_secret_line(line)


def test_five_failures_for_one_nick_lock_it_from_any_address():
    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    for i in range(4):
        assert not limiter.record_failure("alice", f"10.0.0.{i}")
        clock.now += 1
    assert limiter.locked_for("alice", "10.0.0.9") == 0
    assert limiter.record_failure("alice", "10.0.0.4")
    fifth = clock.now
    assert limiter.locked_for("alice", "10.0.0.99") == 60
    assert limiter.locked_for("bob", "10.0.0.99") == 0  # another name from elsewhere: free
    clock.now = fifth + 59.2
    assert limiter.locked_for("alice", "10.0.0.99") == 1  # whole seconds, rounded up
    clock.now = fifth + 59.999
    assert limiter.locked_for("alice", "10.0.0.99") == 1  # never 0 while locked
    clock.now = fifth + 60
    assert limiter.locked_for("alice", "10.0.0.99") == 0


def test_five_failures_from_one_address_lock_it_for_any_nick():
    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    for i in range(5):
        locked = limiter.record_failure(f"user{i}", "192.0.2.7")
    assert locked
    assert limiter.locked_for("carol", "192.0.2.7") == 60
    assert limiter.locked_for("carol", "192.0.2.8") == 0
    clock.now += 30.5
    assert limiter.locked_for("user1", "192.0.2.7") == 30


def test_failures_spread_over_more_than_the_window_do_not_lock():
    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    for _ in range(10):
        assert not limiter.record_failure("alice", "10.0.0.1")
        clock.now += 15.1  # 5 failures always span more than 60 s
    assert limiter.locked_for("alice", "10.0.0.1") == 0


def test_after_a_lockout_counting_starts_again():
    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    for _ in range(5):
        limiter.record_failure("alice", "10.0.0.1")
    clock.now += 61
    assert limiter.locked_for("alice", "10.0.0.1") == 0
    for _ in range(4):
        assert not limiter.record_failure("alice", "10.0.0.1")
    assert limiter.locked_for("alice", "10.0.0.1") == 0
    assert limiter.record_failure("alice", "10.0.0.1")


def test_prune_forgets_old_keys():
    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    for i in range(3000):
        limiter.record_failure(f"n{i}", f"a{i}")
        clock.now += 0.1
    clock.now += 1000
    limiter.prune()
    assert len(limiter) == 0


def test_lockout_message():
    assert lockout_message(7) == "too many failed logins; try again in 7 s"


@pytest.mark.parametrize(
    "line, start",
    [
        ("/login alice secret", 13),
        ("/login alice ", 13),
        ("/login alice", None),
        ("/LOGIN  bob  pw", 12),
        ("/register pw", 10),
        ("/password old new", 10),
        ("//login alice pw", None),
        ("hello", None),
        ("/logout", None),
    ],
)
def test_secret_start(line, start):
    assert secret_start(line) == start


def test_address_keys():
    assert address_key("192.0.2.1") == "192.0.2.1"
    assert address_key("2001:db8:1:2:3:4:5:6") == address_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("fe80::1%eth0") == "fe80::/64"
