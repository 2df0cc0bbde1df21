"""The busy loop's pace (doors/pacer.py): its rule with a hand-driven clock, then what a
client of a real server sees with an exaggerated --turn-ms."""

from __future__ import annotations

import time

import pytest

from geventchat.doors.pacer import LoopPacer


class Clock:
    """The loop's clock (``now``: when the turn began) and the time read now, by hand."""

    def __init__(self) -> None:
        self.turn_began = 100.0
        self.time = 100.0
        self.slept: list[float] = []
        self.callbacks: list = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.time += seconds

    def pacer(self, turn: float = 0.001) -> LoopPacer:
        return LoopPacer(
            turn, now=lambda: self.turn_began, clock=lambda: self.time, sleep=self.sleep, run_callback=self.callbacks.append
        )

    def turn(self, pacer: LoopPacer, began: float, work: float, sends: int = 1) -> None:
        """One loop turn that began at ``began`` and relayed chat ``sends`` times after ``work`` s."""
        self.turn_began = self.time = began
        self.time += work
        for _ in range(sends):
            pacer.relayed()
        while self.callbacks:
            self.callbacks.pop(0)()  # the hop, then the wait


def test_a_turn_after_a_quiet_time_is_not_held():
    clock = Clock()
    pacer = clock.pacer()
    clock.turn(pacer, began=100.0, work=0.0002)
    clock.turn(pacer, began=100.5, work=0.0002)  # half a second later: calm
    assert clock.slept == []


def test_a_busy_turn_lasts_the_turn_length():
    clock = Clock()
    pacer = clock.pacer(0.001)
    clock.turn(pacer, began=100.0, work=0.0002)
    # Input came 0.1 ms after that turn ended: the loop is busy; this turn's sends go out,
    # then the loop waits for the rest of the millisecond before it polls again.
    clock.turn(pacer, began=100.0003, work=0.0003, sends=5)
    assert clock.slept == [0.0007]
    # The turn after a wait of the pacer's is busy too.
    clock.turn(pacer, began=clock.time, work=0.0001)
    assert clock.slept == [0.0007, 0.0009]


def test_a_turn_longer_than_the_turn_length_is_not_held():
    clock = Clock()
    pacer = clock.pacer(0.001)
    clock.turn(pacer, began=100.0, work=0.0002)
    clock.turn(pacer, began=100.0003, work=0.005)
    assert clock.slept == []


def test_the_turn_begins_when_its_first_chat_is_relayed():
    # In a big room the flushes take a while, and the loop reads its clock again among
    # them: the turn's start is what it was when the chat was relayed.
    clock = Clock()
    pacer = clock.pacer(0.001)
    clock.turn(pacer, began=100.0, work=0.0002)
    clock.turn_began = clock.time = 100.0003
    pacer.relayed()
    clock.turn_began = clock.time = 100.0009  # the flushes took 0.6 ms
    while clock.callbacks:
        clock.callbacks.pop(0)()
    assert clock.slept == [0.0004]


def test_one_wait_per_turn_after_everything_queued_in_the_turn():
    clock = Clock()
    pacer = clock.pacer()
    for _ in range(10):
        pacer.relayed()
        clock.callbacks.append("a flush")  # what the relay queued
    assert len(clock.callbacks) == 11  # one hop, then the ten flushes
    hop = clock.callbacks.pop(0)
    hop()
    assert clock.callbacks[:10] == ["a flush"] * 10
    assert clock.callbacks[10].__name__ == "_wait"


def test_a_turn_must_last():
    with pytest.raises(ValueError):
        LoopPacer(0)


# ------------------------------------------------------------------ a real server


def test_lines_sent_during_a_busy_turn_reach_a_client_in_one_piece(start_server, clients):
    server = start_server("--no-presence", "--turn-ms", "100")
    alice, bob, carol = clients(server), clients(server), clients(server)
    time.sleep(0.3)  # the welcomes' turns are long over: the server is calm
    alice.send("one")
    bob.expect(f"{alice.nick}: one")  # a calm room's line is not held (see the timing below)
    alice.send("two")  # right after: a busy turn; the server waits 100 ms after its sends
    bob.expect(f"{alice.nick}: two")
    assert bob.buf == b""
    sent = time.monotonic()
    alice.send("three")
    time.sleep(0.02)
    carol.send("four")
    bob.sock.settimeout(5)
    piece = bob.sock.recv(65536)
    held = time.monotonic() - sent
    # Both senders' lines come in one send, at the next turn (without the pace, "three"
    # would come alone, at once, and "four" 20 ms later). Within a turn the loop takes
    # the ready connections in its own order, not necessarily the order the lines came in.
    three, four = f"{alice.nick}: three\n".encode(), f"{carol.nick}: four\n".encode()
    assert piece in (three + four, four + three), piece
    assert held >= 0.05, held


def test_a_quick_answer_in_a_calm_room_is_not_held(start_server, clients):
    server = start_server("--no-presence", "--turn-ms", "100")
    alice, bob = clients(server), clients(server)
    for word in ("one", "two", "three"):
        time.sleep(0.25)  # calm between the exchanges
        alice.send(word)
        bob.expect(f"{alice.nick}: {word}")
        sent = time.monotonic()
        bob.send(f"re {word}")
        alice.expect(f"{bob.nick}: re {word}")
        # The turn that relayed alice's line followed a quiet time, so the loop did not
        # wait after it: the answer goes out in about a millisecond, far below the 100 ms
        # it would wait behind a held turn.
        assert time.monotonic() - sent < 0.06, word


def test_command_replies_do_not_pace_the_loop(start_server, clients):
    server = start_server("--no-presence", "--turn-ms", "100")
    alice = clients(server)
    began = time.monotonic()
    for _ in range(6):
        alice.send("/rooms")
        alice.expect("*** lobby (1)")
    # Six questions and answers in turn: were each answer's turn held, the next question
    # would wait up to 100 ms.
    assert time.monotonic() - began < 0.3
