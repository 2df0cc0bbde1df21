"""The README's example session is what the server prints today: replayed line by line.

The session block is read from README.md itself: ``X > text`` is sent by client X,
``X < text`` is the next line X must receive, ``(connection closed)`` the end of X's
stream. Client ports in the README (the default nicknames) stand for the real ones.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

from conftest import ChatClient

README = Path(__file__).resolve().parent.parent / "README.md"


def example_blocks() -> tuple[list[str], list[str]]:
    section = README.read_text(encoding="utf-8").split("## An example session", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "the example session and the server's console"
    return blocks[0].splitlines(), blocks[1].splitlines()


def test_the_readme_example_session_is_what_the_server_prints(start_server):
    session, console = example_blocks()
    steps = [re.match(r"([A-Z]) ([<>]) (.*)$", line).groups() for line in session if line.strip()]
    server = start_server()
    ports: dict[str, str] = {}  # a port in the README -> the real one

    def real(text: str) -> str:
        for theirs, ours in ports.items():
            text = text.replace(theirs, ours)
        return text

    # Connect the clients in the order they appear, each reading its welcome first, so
    # that the later one's arrival is announced to the earlier one as in the README.
    people: dict[str, ChatClient] = {}
    for who, way, text in list(steps):
        if who in people:
            continue
        assert way == "<", f"{who}'s first line is the welcome"
        client = people[who] = ChatClient(server.port, welcome=False)
        readme_port = re.search(r"Welcome, (\d+)!", text).group(1)
        ports[readme_port] = str(client.port)
        assert client.line() == real(text)
        steps.remove((who, way, text))

    for who, way, text in steps:
        client = people[who]
        if way == ">":
            client.send(text)
        elif text == "(connection closed)":
            assert client.read_to_eof() == []
        else:
            assert client.line() == real(text), f"{who} < {text}"

    for client in people.values():
        if not client.eof:
            try:
                client.sock.close()
            except OSError:
                pass
    for client in people.values():
        server.wait_for_text(f"Client 127.0.0.1:{client.port} disconnected")
    server.signal(signal.SIGTERM)
    assert server.wait(10) == 0

    listening = re.search(r"Server listening on \S+:(\d+)", console[0]).group(1)
    ports[listening] = str(server.port)
    assert server.stdout_lines() == [real(line) for line in console]
