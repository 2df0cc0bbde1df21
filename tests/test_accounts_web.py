"""Accounts on the web page (contract section 11), in a real headless Chromium: what is
typed after "/login NICK " (and /register, /password) is masked, such lines never enter
the input history (arrow up), and a login over the WebSocket works."""

from __future__ import annotations

import pytest
from test_accounts_e2e import PASSWORD, registered
from test_web_e2e import browser, expect, pages, url_of  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(90)


def test_password_lines_are_masked_and_kept_out_of_history(start_server, clients, pages, tmp_path):  # noqa: F811
    server = start_server("--web-port", "0", "--db", str(tmp_path / "chat.db"), "--no-presence")
    holder = registered(clients(server), "iris")
    page = pages(url_of(server))
    box, mask = page.page.locator("#input"), page.page.locator("#input-mask")
    page.say("a chat line")
    page.page.keyboard.type("/login iris ")
    expect(mask).to_have_text("/login iris ")
    page.page.keyboard.type(PASSWORD)
    # The box's own text is transparent; over it, the mask shows the start and dots.
    expect(mask).to_be_visible()
    expect(mask).to_have_text("/login iris " + "\u2022" * len(PASSWORD))
    assert box.evaluate("el => getComputedStyle(el).color") == "rgba(0, 0, 0, 0)"
    assert box.evaluate("el => el.spellcheck") is False
    mask_box, input_box = mask.bounding_box(), box.bounding_box()
    assert mask_box == input_box  # laid exactly over the box
    page.page.keyboard.press("Enter")
    page.sees("notice", "You are now logged in as iris")
    expect(mask).to_be_hidden()
    assert box.evaluate("el => getComputedStyle(el).color") != "rgba(0, 0, 0, 0)"
    holder.until(lambda line: line == "*** You were logged out: iris logged in from another connection")
    for line in (f"/password {PASSWORD} new-secret-42", f"/REGISTER {PASSWORD}"):
        page.page.keyboard.type(line)
        expect(mask).to_have_text(
            line.split(" ", 1)[0] + " " + "".join(" " if c == " " else "\u2022" for c in line.split(" ", 1)[1])
        )
        page.page.keyboard.press("Enter")
    page.sees("notice", "Password changed")
    # Arrow up: the chat line comes back, the password lines never.
    page.page.keyboard.press("ArrowUp")
    expect(box).to_have_value("a chat line")
    page.page.keyboard.press("ArrowUp")
    expect(box).to_have_value("a chat line")
    html = page.page.evaluate("() => document.documentElement.outerHTML")
    assert PASSWORD not in html and "new-secret-42" not in html
    assert page.errors == []
