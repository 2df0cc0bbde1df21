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


DESIGN = OPERATIONS.parent / "design.md"
PACKAGE = OPERATIONS.parent.parent / "geventchat"


def test_docs_design_names_every_module_of_each_package():
    rows = re.findall(r"^\| `geventchat\.(\w+)` \| ([^|]*) \|", DESIGN.read_text(encoding="utf-8"), re.M)
    listed = {package: set(re.findall(r"`(\w+)\.py`", modules)) for package, modules in rows}
    for package in ("core", "chat", "doors", "stores", "server", "client"):
        modules = {path.stem for path in (PACKAGE / package).glob("*.py")} - {"__init__", "__main__"}
        assert listed.get(package) == modules, f"docs/design.md's row for geventchat.{package}"
