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


# ------------------------------------------------------------ the first five minutes

CI_RUN = README.parent / ".ci" / "run"
DOCS = README.parent / "docs"


def get_going_commands() -> list[str]:
    section = README.read_text(encoding="utf-8").split("## Get going", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_the_readme_gets_going_in_two_commands_in_a_virtual_environment():
    setup_and_serve, setup_and_test = get_going_commands()
    for command in (setup_and_serve, setup_and_test):
        assert "\n" not in command, "one command, to paste as it is"
        # Debian's own Python refuses `pip install` outside a virtual environment.
        assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements")
    assert setup_and_serve.endswith("&& python -m geventchat.server")
    assert setup_and_test.endswith("&& python -m pytest")


def test_ci_runs_the_readme_test_command_word_for_word():
    _, setup_and_test = get_going_commands()
    lines = [line.strip() for line in CI_RUN.read_text(encoding="utf-8").splitlines()]
    assert any(line == setup_and_test or line.startswith(setup_and_test + " ||") for line in lines), (
        f".ci/run must run the README's test command: {setup_and_test}"
    )


def test_the_benchmark_works_after_the_readme_install():
    """The first command installs requirements.txt: it must hold what `python -m bench` imports
    (matplotlib, for plots only, may stay out)."""
    required = {
        re.split(r"[<>=!;\s\[]", line, maxsplit=1)[0].lower()
        for line in (README.parent / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    imported = set()
    for source in (README.parent / "bench").glob("*.py"):
        imported |= set(re.findall(r"^\s*(?:import|from) (\w+)", source.read_text(encoding="utf-8"), re.M))
    third_party = {"psutil", "tqdm", "numpy"} & imported
    assert third_party == {"psutil", "tqdm", "numpy"}, "the benchmark's imports changed: update this test"
    assert third_party <= required


def test_the_readme_stays_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200


def test_docs_link_only_to_files_in_the_repository():
    """README and docs/ never point outside the repository (a clone has no ../shared), and
    every relative link names a file that exists."""
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        assert "../shared" not in text and "CONTRACT.md" not in text, page.name
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert path.exists(), f"{page.name} links {target}, which does not exist"
            assert README.parent in path.parents, f"{page.name} links {target}, outside the repository"
