"""Slash-command handlers: one table from command name to handler.

``protocol.parse_line`` has already done the checks every command shares (known name,
enough arguments, usage message); a handler does only its own work, and refuses a
request by raising ``HubError``, which becomes ``*** Error: ...`` for the sender alone.
"""

from __future__ import annotations

from collections.abc import Callable

from geventchat.chat.accounts import Accounts
from geventchat.chat.hub import Hub, HubError, Member, chunked
from geventchat.core import accountrules, history, limits, protocol

Handler = Callable[[Hub, Member, tuple[str, ...]], None]


def _nick(hub: Hub, member: Member, args: tuple[str, ...]) -> None:
    hub.rename(member, args[0])


def _join(hub: Hub, member: Member, args: tuple[str, ...]) -> None:
    hub.join(member, args[0])


def _rooms(hub: Hub, member: Member, args: tuple[str, ...]) -> None:
    for name, count in hub.room_counts():
        member.deliver(protocol.notice(f"{name} ({count})"))


def _who(hub: Hub, member: Member, args: tuple[str, ...]) -> None:
    room = member.room
    assert room is not None, "every registered member is in a room"
    nicks = hub.nicks_in(room)
    for names in chunked(nicks, limits.WHO_NAMES_PER_LINE):
        member.deliver(protocol.notice(f"Members of {room.name} ({len(nicks)}): {' '.join(names)}"))


def _msg(hub: Hub, member: Member, args: tuple[str, ...]) -> None:
    hub.private(member, args[0], args[1])


def _me(hub: Hub, member: Member, args: tuple[str, ...]) -> None:
    hub.action(member, args[0])


def _stats(hub: Hub, member: Member, args: tuple[str, ...]) -> None:
    counts = hub.room_counts()
    total = sum(count for _, count in counts)
    member.deliver(protocol.notice(f"{total} connected in {len(counts)} room{'s' if len(counts) != 1 else ''}"))
    for name, count in counts:
        member.deliver(protocol.notice(f"{name} ({count})"))


def _accounts(hub: Hub) -> Accounts:
    if hub.accounts is None:
        raise HubError(accountrules.NO_STORE)
    return hub.accounts


def _address(member: Member) -> str:
    address = getattr(member, "address", None)
    return accountrules.address_key(str(address[0])) if address else ""


def _register(hub: Hub, member: Member, args: tuple[str, ...]) -> None:
    _accounts(hub).register(hub, member, args[0])


def _login(hub: Hub, member: Member, args: tuple[str, ...]) -> None:
    _accounts(hub).login(hub, member, args[0], args[1], _address(member))


def _logout(hub: Hub, member: Member, args: tuple[str, ...]) -> None:
    _accounts(hub).logout(member)


def _password(hub: Hub, member: Member, args: tuple[str, ...]) -> None:
    _accounts(hub).change_password(member, args[0], args[1], _address(member))


def _history(hub: Hub, member: Member, args: tuple[str, ...]) -> None:
    if hub.history is None:
        raise HubError(history.HISTORY_OFF)
    count = history.parse_count(args)
    if count is None:
        raise HubError(history.USAGE)
    hub.show_history(member, count)


def _help(hub: Hub, member: Member, args: tuple[str, ...]) -> None:
    for line in protocol.help_lines():
        member.deliver(line)


HANDLERS: dict[str, Handler] = {
    "nick": _nick,
    "join": _join,
    "rooms": _rooms,
    "who": _who,
    "msg": _msg,
    "me": _me,
    "stats": _stats,
    "register": _register,
    "login": _login,
    "logout": _logout,
    "password": _password,
    "history": _history,
    "help": _help,
}

# "quit" is parsed into protocol.Quit and handled by the connection, which owns the socket.
assert set(HANDLERS) | {"quit"} == set(protocol.COMMAND_SPECS), "every command has one handler"


def dispatch(hub: Hub, member: Member, command: protocol.Command) -> None:
    """Run one command for ``member``; a refusal becomes an error line for it alone."""
    try:
        HANDLERS[command.name](hub, member, command.args)
    except HubError as refusal:
        member.deliver(protocol.error(str(refusal)))
