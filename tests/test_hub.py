"""The hub without sockets: members are plain objects that collect what they are sent."""

import pytest

from geventchat.chat import commands, events
from geventchat.chat.hub import Hub
from geventchat.core import limits, protocol


class FakeMember:
    """A member as the hub sees it; the hub's only duty to it is deliver()."""

    def __init__(self):
        self.nick = ""
        self.room = None
        self.lines = []

    def deliver(self, data):
        self.lines.append(data.decode())

    def take(self):
        lines, self.lines = self.lines, []
        return lines


def joined(hub, *nicks, presence=True):
    members = []
    for nick in nicks:
        member = FakeMember()
        hub.add(member, nick)
        members.append(member)
    for member in members:
        member.take()
    return members


def run(hub, member, line):
    request = protocol.parse_line(line)
    if isinstance(request, protocol.Command):
        commands.dispatch(hub, member, request)
    elif isinstance(request, protocol.Chat):
        hub.chat(member, request.text)
    else:
        raise AssertionError(request)


def test_welcome_and_presence_on_add():
    hub = Hub(log_messages=False)
    first = FakeMember()
    hub.add(first, "100")
    assert first.take() == ["*** Welcome, 100! You are in lobby. Type /help for commands.\n"]
    second = FakeMember()
    hub.add(second, "200")
    assert first.take() == ["*** 200 joined lobby\n"]
    assert second.take()[0].startswith("*** Welcome, 200!")


def test_taken_port_nick_gets_a_free_variant():
    hub = Hub(log_messages=False)
    a, b, c = joined(hub, "100", "100", "100")
    assert (a.nick, b.nick, c.nick) == ("100", "100-2", "100-3")


def test_chat_reaches_others_once_and_never_the_sender():
    hub = Hub(log_messages=False)
    a, b, c = joined(hub, "1", "2", "3")
    run(hub, a, "hi")
    assert a.take() == [] and b.take() == ["1: hi\n"] and c.take() == ["1: hi\n"]


def test_rooms_are_made_on_join_and_dropped_when_empty():
    hub = Hub(log_messages=False)
    a, b = joined(hub, "a", "b")
    run(hub, a, "/join Dev")
    assert a.take() == ["*** You are now in Dev\n"]
    assert b.take() == ["*** a left lobby\n"]
    assert [name for name, _ in hub.room_counts()] == ["Dev", "lobby"]
    run(hub, b, "/join dev")  # case ignored: same room
    assert a.take() == ["*** b joined Dev\n"]
    assert hub.room_counts() == [("Dev", 2)]
    run(hub, a, "x")
    assert b.take()[-1] == "a: x\n"


def test_nick_uniqueness_ignores_case_and_rename_is_announced():
    hub = Hub(log_messages=False)
    a, b = joined(hub, "alice", "bob")
    run(hub, b, "/nick ALICE")
    assert b.take() == ["*** Error: nickname ALICE is already taken\n"]
    run(hub, b, "/nick bobby")
    assert b.take() == ["*** You are now known as bobby\n"]
    assert a.take() == ["*** bob is now known as bobby\n"]
    run(hub, b, "/nick bad name")
    assert b.take()[0].startswith("*** Error: invalid nickname")
    run(hub, a, "/nick Alice")  # own name in another case is allowed
    assert a.take() == ["*** You are now known as Alice\n"]


def test_private_message_and_unknown_target():
    hub = Hub(log_messages=False)
    a, b, c = joined(hub, "a", "b", "c")
    run(hub, a, "/join elsewhere")
    a.take(), b.take(), c.take()
    run(hub, a, "/msg B secret plan")
    assert b.take() == ["*a* secret plan\n"]
    assert a.take() == ["*** To b: secret plan\n"]
    assert c.take() == []
    run(hub, a, "/msg nobody hi")
    assert a.take() == ["*** Error: no such nickname: nobody\n"]
    run(hub, a, "/msg A to myself")  # the sender never gets *a*, even as the target
    assert a.take() == ["*** To a: to myself\n"]


def test_who_rooms_stats_help():
    hub = Hub(log_messages=False)
    a, b, c = joined(hub, "a", "b", "c")
    run(hub, c, "/join side")
    a.take()
    run(hub, a, "/who")
    assert a.take() == ["*** Members of lobby (2): a b\n"]
    run(hub, a, "/rooms")
    assert a.take() == ["*** lobby (2)\n", "*** side (1)\n"]
    run(hub, a, "/stats")
    assert a.take() == ["*** 3 connected in 2 rooms\n", "*** lobby (2)\n", "*** side (1)\n"]
    run(hub, a, "/help")
    assert a.take()[0] == "*** Commands:\n"


def test_who_splits_a_crowded_room_over_lines():
    hub = Hub(presence=False, log_messages=False)
    members = joined(hub, *[f"n{i}" for i in range(120)])
    run(hub, members[0], "/who")
    lines = members[0].take()
    assert len(lines) == 3
    named = [word for line in lines for word in line.split(": ", 1)[1].split()]
    assert named == [f"n{i}" for i in range(120)]


def test_remove_announces_quit_and_frees_the_nick():
    hub = Hub(log_messages=False)
    a, b = joined(hub, "a", "b")
    hub.remove(a, "bye")
    assert b.take() == ["*** a quit (bye)\n"]
    hub.remove(a)  # twice is harmless
    again = FakeMember()
    hub.add(again, "a")
    assert again.nick == "a"


def test_no_presence_keeps_the_others_uninformed():
    hub = Hub(presence=False, log_messages=False)
    a, b = joined(hub, "a", "b")
    run(hub, b, "/nick bee")
    run(hub, b, "/join x")
    hub.remove(b)
    assert a.take() == []


def test_adding_an_invalid_nick_is_a_bug():
    with pytest.raises(ValueError):
        Hub().add(FakeMember(), "not valid")


def test_chat_lines_reach_each_recipient_as_one_piece_in_order():
    hub = Hub(log_messages=False)
    a, b = joined(hub, "a", "b")
    hub.chat_lines(a, ["x", "y", "z"])
    assert b.take() == ["a: x\na: y\na: z\n"]
    assert a.take() == []


# ------------------------------------------------------------- members in several rooms


class FakeIrcMember(FakeMember):
    """A member in any number of rooms (an IRC user), reading the IRC encoding."""

    encoding = "irc"
    irc_user = "~bob"

    def __init__(self):
        super().__init__()
        self.rooms = {}


def test_an_irc_member_is_in_no_room_until_it_enters_and_may_be_in_several():
    hub = Hub(log_messages=False)
    (alice,) = joined(hub, "alice")
    bob = FakeIrcMember()
    hub.add(bob, "bob", None)
    assert bob.take() == [] and alice.take() == [] and bob.rooms == {}
    lobby = hub.enter(bob, "lobby")
    dev = hub.enter(bob, "#dev")
    assert hub.enter(bob, "LOBBY") is None  # there already
    assert set(bob.rooms) == {"lobby", "#dev"} and bob.room is None
    assert bob.take() == [":bob!~bob@geventchat JOIN #lobby\r\n", ":bob!~bob@geventchat JOIN ##dev\r\n"]
    assert alice.take() == ["*** bob joined lobby\n"]
    hub.chat(alice, "hi bob")
    assert bob.take() == [":alice!line@geventchat PRIVMSG #lobby :hi bob\r\n"]
    hub.chat(bob, "hi alice", lobby)
    hub.chat(bob, "nobody here", dev)
    assert alice.take() == ["bob: hi alice\n"] and bob.take() == []
    hub.part(bob, dev, "bye")
    assert bob.take() == [":bob!~bob@geventchat PART ##dev :bye\r\n"] and "#dev" not in hub.rooms


def test_a_quit_and_a_rename_are_told_once_to_each_member_sharing_rooms():
    hub = Hub(log_messages=False)
    bob, carol = FakeIrcMember(), FakeIrcMember()
    hub.add(bob, "bob", None)
    hub.add(carol, "carol", None)
    for room in ("a", "b", "c"):
        hub.enter(bob, room)
        hub.enter(carol, room)
    (alice,) = joined(hub, "alice")  # in lobby: shares nothing with bob
    bob.take(), carol.take()
    hub.rename(bob, "robert", confirm=False)
    assert carol.take() == [":bob!~bob@geventchat NICK robert\r\n"] and alice.take() == []
    hub.remove(bob, "gone")
    assert carol.take() == [":robert!~bob@geventchat QUIT :Quit: gone\r\n"]
    assert sorted(hub.rooms) == ["a", "b", "c", "lobby"]


def test_no_presence_quiets_line_members_only():
    hub = Hub(presence=False, log_messages=False)
    alice, dave = joined(hub, "alice", "dave")
    bob = FakeIrcMember()
    hub.add(bob, "bob", None)
    hub.enter(bob, "lobby")
    assert alice.take() == [] and bob.take() == [":bob!~bob@geventchat JOIN #lobby\r\n"]
    hub.rename(dave, "david")
    hub.remove(alice)
    assert bob.take() == [":dave!line@geventchat NICK david\r\n", ":alice!line@geventchat QUIT :Quit\r\n"]
    hub.chat(bob, "still chat", hub.rooms["lobby"])
    assert dave.take() == ["*** You are now known as david\n", "bob: still chat\n"]


def test_private_messages_and_actions_across_encodings():
    hub = Hub(log_messages=False)
    (alice,) = joined(hub, "alice")
    bob = FakeIrcMember()
    hub.add(bob, "bob", None)
    hub.private(alice, "BOB", "psst")
    assert bob.take() == [":alice!line@geventchat PRIVMSG bob :psst\r\n"]
    assert alice.take() == ["*** To bob: psst\n"]
    hub.private(bob, "alice", "waves", events.PRIVATE_ACTION, confirm=False)
    hub.private(bob, "alice", "note", events.PRIVATE_NOTICE, confirm=False)
    assert alice.take() == ["*bob* * bob waves\n", "*bob* note\n"] and bob.take() == []
    hub.enter(bob, "lobby")
    bob.take()
    hub.action(alice, "dances")
    assert bob.take() == [":alice!line@geventchat PRIVMSG #lobby :\x01ACTION dances\x01\r\n"]


def test_a_long_line_reaches_irc_members_as_several_privmsgs_nothing_cut():
    hub = Hub(log_messages=False)
    (alice,) = joined(hub, "alice")
    bob = FakeIrcMember()
    hub.add(bob, "bob", None)
    hub.enter(bob, "lobby")
    bob.take()
    text = "".join(f"{i:04d}\u00e9 " for i in range(500))[:3000]
    hub.chat(alice, text)
    (data,) = bob.take()
    lines = data.encode().split(b"\r\n")[:-1]
    assert len(lines) > 5 and all(len(line) + 2 <= 512 for line in lines)
    prefix = ":alice!line@geventchat PRIVMSG #lobby :"
    assert all(line.decode().startswith(prefix) for line in lines)
    assert "".join(line.decode()[len(prefix) :] for line in lines) == text


def test_events_cross_the_bus_intact():
    event = events.Event(events.CHAT, "alice", "line", "#dev", ("one", "two: three"))
    back = events.Event.from_bus(event.to_bus())
    assert back.encoded("irc") == event.encoded("irc") and back.encoded("line") == event.encoded("line")
    assert events.Event.from_bus(events.raw(b"*** x\n").to_bus()).encoded("line") == b"*** x\n"


# ------------------------------------------------------- presence in a busy room, in batches


class Later:
    """The hub's call_later and clock, run by hand: ``now`` moves only when a test says so."""

    def __init__(self):
        self.now = 100.0
        self.calls = []

    def call_later(self, seconds, function):
        self.calls.append((self.now + seconds, function))

    def clock(self):
        return self.now

    def run_due(self, seconds):
        self.now += seconds
        due = [c for c in self.calls if c[0] <= self.now]
        self.calls = [c for c in self.calls if c[0] > self.now]
        for _when, function in due:
            function()


def batching_hub():
    later = Later()
    return Hub(log_messages=False, call_later=later.call_later, clock=later.clock), later


def settled(hub, later, *nicks):
    """Members added, everything held for them sent, their lines read, the room quiet."""
    members = []
    for nick in nicks:
        member = FakeMember()
        hub.add(member, nick)
        members.append(member)
    later.run_due(1.0)
    later.now += 1.0
    for member in members:
        member.take()
    return members


def test_a_lone_join_is_told_at_once_and_a_burst_goes_out_as_one_piece():
    hub, later = batching_hub()
    (a,) = settled(hub, later, "a")
    b, c, d = FakeMember(), FakeMember(), FakeMember()
    hub.add(b, "b")
    assert a.take() == ["*** b joined lobby\n"]  # the room was quiet: at once
    b.take()  # its welcome
    hub.add(c, "c")
    hub.add(d, "d")
    assert a.take() == [] and b.take() == []  # soon after the last: held
    later.run_due(limits.PRESENCE_BATCH_S)
    assert a.take() == ["*** c joined lobby\n*** d joined lobby\n"]  # one piece
    assert b.take() == ["*** c joined lobby\n*** d joined lobby\n"]
    # each newcomer is told only what came after it, never its own join
    assert c.take()[1:] == ["*** d joined lobby\n"]
    assert d.take()[1:] == []
    later.run_due(1.0)  # quiet again: the next join goes out at once
    hub.add(FakeMember(), "e")
    assert a.take() == ["*** e joined lobby\n"]


def test_newcomers_in_a_batch_see_only_the_joins_after_their_own():
    hub, later = batching_hub()
    (a,) = settled(hub, later, "a")
    b = FakeMember()
    hub.add(b, "b")  # at once
    newcomers = []
    for nick in ("c", "d", "e"):
        member = FakeMember()
        hub.add(member, nick)
        assert member.take()[0].startswith(f"*** Welcome, {nick}!")
        newcomers.append(member)
    c, d, e = newcomers
    later.run_due(limits.PRESENCE_BATCH_S)
    assert c.take() == ["*** d joined lobby\n*** e joined lobby\n"]
    assert d.take() == ["*** e joined lobby\n"]
    assert e.take() == []
    assert hub.stats.lines_relayed == 1 + 3 * 2 + 2 + 1  # b's (to a), then c, d, e's (a, b; c; d)


def test_chat_sends_what_is_held_first():
    hub, later = batching_hub()
    a, b = settled(hub, later, "a", "b")
    c, d = FakeMember(), FakeMember()
    hub.add(c, "c")  # at once
    hub.add(d, "d")  # held
    run(hub, b, "hello")
    assert a.take() == ["*** c joined lobby\n", "*** d joined lobby\n", "b: hello\n"]
    assert c.take()[1:] == ["*** d joined lobby\n", "b: hello\n"]
    assert d.take()[1:] == ["b: hello\n"]
    assert b.take() == ["*** c joined lobby\n", "*** d joined lobby\n"]
    later.run_due(limits.PRESENCE_BATCH_S)  # nothing is left to send
    assert [a.take(), b.take(), c.take(), d.take()] == [[], [], [], []]


def test_a_member_that_leaves_is_told_what_was_held_for_it_first():
    hub, later = batching_hub()
    a, b = settled(hub, later, "a", "b")
    c, d = FakeMember(), FakeMember()
    hub.add(c, "c")  # at once
    hub.add(d, "d")  # held
    a.take(), b.take(), c.take(), d.take()
    run(hub, a, "/join den")
    assert a.take() == ["*** d joined lobby\n", "*** You are now in den\n"]
    later.run_due(limits.PRESENCE_BATCH_S)
    assert b.take() == ["*** d joined lobby\n*** a left lobby\n"]
    assert d.take() == ["*** a left lobby\n"]


def test_quits_and_renames_are_held_like_joins():
    hub, later = batching_hub()
    a, b, c = settled(hub, later, "a", "b", "c")
    run(hub, b, "/nick bee")  # at once
    assert a.take() == ["*** b is now known as bee\n"]
    assert b.take() == ["*** You are now known as bee\n"]
    hub.remove(c, "bye")
    run(hub, b, "/nick bea")
    assert b.take() == ["*** You are now known as bea\n"]  # its own reply is never held
    assert a.take() == []
    later.run_due(limits.PRESENCE_BATCH_S)
    assert a.take() == ["*** c quit (bye)\n*** bee is now known as bea\n"]
    assert b.take() == ["*** c quit (bye)\n"]


def test_stopping_sends_what_is_held():
    hub, later = batching_hub()
    (a,) = settled(hub, later, "a")
    hub.add(FakeMember(), "b")
    hub.add(FakeMember(), "c")
    a.take()
    hub.begin_stop()
    assert a.take() == ["*** c joined lobby\n"]
    later.run_due(limits.PRESENCE_BATCH_S)
    assert a.take() == []


def test_catch_up_tells_a_member_its_share_now_and_not_again():
    # The doors call catch_up before acting on a command, so that its reply comes after
    # everything that happened in the member's room before it.
    hub, later = batching_hub()
    a, b = settled(hub, later, "a", "b")
    hub.add(FakeMember(), "c")  # at once
    a.take(), b.take()
    hub.add(FakeMember(), "d")  # held
    hub.catch_up(a)
    assert a.take() == ["*** d joined lobby\n"]
    assert b.take() == []
    hub.add(FakeMember(), "e")  # held too
    hub.catch_up(a)  # only what it was not told yet
    hub.catch_up(a)  # nothing new
    assert a.take() == ["*** e joined lobby\n"]
    later.run_due(limits.PRESENCE_BATCH_S)
    assert a.take() == []
    assert b.take() == ["*** d joined lobby\n*** e joined lobby\n"]


def test_taking_a_name_shows_its_holders_rename_before_ones_own():
    hub, later = batching_hub()
    holder, taker, other = settled(hub, later, "alice", "bob", "carol")
    holder.address = ("127.0.0.1", 44376)
    run(hub, other, "/nick carla")  # at once: the room is busy from here
    taker.take(), holder.take(), other.take()
    hub.take_nick(taker, "alice")
    assert taker.take() == ["*** alice is now known as 44376\n", "*** You are now known as alice\n"]
    later.run_due(limits.PRESENCE_BATCH_S)
    assert other.take() == ["*** alice is now known as 44376\n*** bob is now known as alice\n"]
    assert holder.take()[-1:] == ["*** bob is now known as alice\n"]


def test_a_batch_goes_out_when_it_is_full():
    hub, later = batching_hub()
    (a,) = settled(hub, later, "a")
    hub.add(FakeMember(), "first")  # at once
    a.take()
    for n in range(limits.PRESENCE_BATCH_MAX - 1):
        hub.add(FakeMember(), f"n{n}")
    assert a.take() == []
    hub.add(FakeMember(), "last")  # the batch is full: out now, before its time
    (piece,) = a.take()
    assert piece.count("\n") == limits.PRESENCE_BATCH_MAX and piece.endswith("*** last joined lobby\n")


def test_without_presence_a_storm_of_line_joins_holds_nothing_but_irc_users_are_told():
    later = Later()
    hub = Hub(presence=False, log_messages=False, call_later=later.call_later, clock=later.clock)
    members = [FakeMember() for _ in range(5)]
    for number, member in enumerate(members):
        hub.add(member, f"m{number}")
    assert later.calls == []  # nobody in the room is told presence: nothing held for later
    assert [member.take()[1:] for member in members] == [[]] * 5  # each its welcome only
    bob = FakeIrcMember()
    hub.add(bob, "bob", None)
    hub.enter(bob, "lobby")
    bob.take()
    late, later_still = FakeMember(), FakeMember()
    hub.add(late, "late")
    hub.add(later_still, "later")
    later.run_due(limits.PRESENCE_BATCH_S)
    assert "".join(bob.take()) == ":late!line@geventchat JOIN #lobby\r\n:later!line@geventchat JOIN #lobby\r\n"
    assert members[0].take() == []


def test_commands_wait_only_on_a_store_that_waits(tmp_path):
    # A door carries out commands in the loop's callback only when nothing they do waits.
    from geventchat.chat.accounts import Accounts
    from geventchat.stores.accounts import SqliteAccountStore
    from geventchat.stores.memory import MemoryHistory
    from geventchat.stores.sqlite_history import SQLiteHistory

    assert not Hub().commands_wait
    assert not Hub(history=MemoryHistory(100)).commands_wait
    on_disk = SQLiteHistory(str(tmp_path / "history.db"), 100)
    try:
        assert Hub(history=on_disk).commands_wait
    finally:
        on_disk.close()
    hub = Hub(history=MemoryHistory(100))
    hub.accounts = Accounts(SqliteAccountStore(str(tmp_path / "chat.db")), hub.stats)
    assert hub.commands_wait
    hub.accounts.close()


def test_after_relay_is_called_for_chat_to_a_room_only():
    # The server's pacer (doors/pacer.py) hangs here: chat paces a busy loop, replies do not.
    hub = Hub(log_messages=False)
    calls = []
    hub.after_relay = lambda: calls.append(len(b.lines))  # the recipients have it already
    a, b = joined(hub, "1", "2")
    hub.chat_lines(a, ["one", "two"])
    run(hub, a, "/me waves")
    assert calls == [1, 2]
    run(hub, a, "/who")
    run(hub, a, "/msg 2 psst")
    run(hub, a, "/join elsewhere")
    assert calls == [1, 2]
