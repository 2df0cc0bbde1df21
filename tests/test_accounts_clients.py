"""Accounts in the terminal client (contract section 11): --password-file logs in on
connect, a file others can read is refused, and /register, /login, /password lines never
enter the input history (checked in a real terminal, tmux)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT
from test_accounts_e2e import PASSWORD, registered
from test_client_tty import TMUX, client_command, tmux_session  # noqa: F401  (fixture)

ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def run_client(port: int, stdin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geventchat.client", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=ROOT,
        env=ENV,
        input=stdin.encode(),
        capture_output=True,
        timeout=20,
    )


@pytest.fixture
def db_server(start_server, tmp_path):
    return start_server("--db", str(tmp_path / "chat.db"), "--no-presence")


def password_file(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "password"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_password_file_logs_in_on_connect(db_server, clients, tmp_path):
    holder = registered(clients(db_server), "gina")
    path = password_file(tmp_path, PASSWORD + "\n")
    done = run_client(db_server.port, "/who\nexit\n", "--nick", "gina", "--password-file", str(path))
    out = done.stdout.decode()
    assert done.returncode == 0, done
    assert "*** You are now logged in as gina" in out.splitlines()
    assert PASSWORD not in out and PASSWORD.encode() not in done.stderr
    holder.expect("*** You were logged out: gina logged in from another connection", f"*** You are now known as {holder.port}")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_password_file_others_can_read_is_refused(tmp_path, mode):
    path = password_file(tmp_path, PASSWORD + "\n", mode)
    done = run_client(9, "", "--nick", "gina", "--password-file", str(path))  # refused before any connect
    assert done.returncode == 2
    err = done.stderr.decode().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "chmod 600" in err[0], err
    assert done.stdout == b"" and PASSWORD not in done.stderr.decode()


def test_a_missing_password_file_or_no_nick_is_one_line_and_status_2(tmp_path):
    done = run_client(9, "", "--nick", "gina", "--password-file", str(tmp_path / "nope"))
    assert done.returncode == 2 and len(done.stderr.decode().splitlines()) == 1, done
    path = password_file(tmp_path, PASSWORD)
    done = run_client(9, "", "--password-file", str(path))
    assert done.returncode == 2 and "--password-file needs --nick" in done.stderr.decode()


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_terminal_history_keeps_no_password_lines(db_server, tmux_session):  # noqa: F811
    term = tmux_session(client_command(db_server.port, "--nick", "hank"))
    prompt = "[lobby] hank>"
    term.wait_screen(lambda lines: term.input_line(lines) == prompt, "the prompt")
    sent = (
        ("first line", "hank: first line"),
        (f"/register {PASSWORD}", "/register ********"),
        (f"/password {PASSWORD} other-pass-1", "/password ********"),
        (f"/LOGIN hank {PASSWORD}", "/LOGIN hank ********"),
    )
    for line, shown in sent:
        term.keys(line)
        # Typed into the prompt (never before it is there: keys typed between two prompts
        # are echoed by the terminal itself), then sent and shown as sent.
        term.wait_screen(lambda lines, line=line: term.input_line(lines).startswith(f"{prompt} {line.split()[0]}"), "typed")
        term.press("Enter")
        term.wait_screen(
            lambda lines, shown=shown: term.input_line(lines) == prompt and any(l.endswith(shown) for l in lines), "the line sent"
        )
    term.wait_text("*** Password changed")
    # Typed, a password shows as stars (the input line is masked as it is typed).
    term.keys(f"/login hank {PASSWORD}")
    term.wait_screen(lambda lines: term.input_line(lines) == f"{prompt} /login hank " + "*" * len(PASSWORD), "masked")
    term.press("C-u")
    screen = term.screen()
    assert not any(PASSWORD in line or "other-pass-1" in line for line in screen), "\n".join(screen)
    term.press("Up")
    term.wait_screen(lambda lines: term.input_line(lines) == f"{prompt} first line", "the chat line, not a password line")
    term.press("Up")
    term.wait_screen(lambda lines: term.input_line(lines) == f"{prompt} first line", "nothing older")
    term.press("C-u")
    term.press("C-d")
    term.wait_text("[exit 0]")
