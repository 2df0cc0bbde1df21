"""docs/operations.md describes every flag the server has: each one `--help` lists is in it."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_server_command

OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def test_every_server_flag_is_in_docs_operations():
    help_text = run_server_command("--help").stdout
    flags = set(re.findall(r"^\s+(--[a-z][a-z-]*)", help_text, re.M)) - {"--help"}
    assert "--port" in flags and "--redis-url" in flags, help_text
    described = set(re.findall(r"^\| `(--[a-z][a-z-]*)", OPERATIONS.read_text(encoding="utf-8"), re.M))
    described |= {"--version"}  # one row with --help
    assert flags - described == set(), "flags missing from docs/operations.md's table"
