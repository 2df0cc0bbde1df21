"""The browser client end to end: a real server, Debian's chromium driven by Playwright,
and terminal (TCP) users in the same rooms.

Playwright's own browser download is not used: the tests launch the system chromium
(``GEVENTCHAT_CHROMIUM`` or ``chromium`` on PATH; ``.ci/run`` installs it). Without it
these tests are skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import ROOT, ServerProcess
from web_helpers import web_port

CHROMIUM = os.environ.get("GEVENTCHAT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM and os.environ.get("GEVENTCHAT_REQUIRE_CHROMIUM"):
    raise RuntimeError("GEVENTCHAT_REQUIRE_CHROMIUM is set but no chromium is on PATH")
if not CHROMIUM:
    pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run does): browser tests skipped", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -r requirements-dev.txt)")
expect = sync_api.expect

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The README's picture. Written only when asked (GEVENTCHAT_UPDATE_SCREENSHOT=1), so that a
# test run leaves the working tree clean; otherwise the screenshot goes to a temporary dir.
SCREENSHOT = ROOT / "docs" / "screenshot.png"
UI_WAIT = 10_000  # ms: what the page should do "at once" on localhost, with room for CI

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class ChatPage:
    """One browser tab on the chat page; records any dialog (alert) that fires."""

    def __init__(self, browser, url: str, viewport=(1100, 640), **context_args) -> None:
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, **context_args)
        self.context.set_default_timeout(UI_WAIT)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []

        def on_dialog(dialog) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        self.page.on("dialog", on_dialog)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(url)
        self.wait_connected()

    def wait_connected(self, timeout: int = UI_WAIT) -> None:
        expect(self.page.locator("#status")).to_have_attribute("data-state", "connected", timeout=timeout)

    @property
    def nick(self) -> str:
        return self.page.locator("#nick-name").text_content() or ""

    def say(self, line: str) -> None:
        self.page.fill("#input", line)
        self.page.press("#input", "Enter")

    def messages(self, kind: str = ""):
        return self.page.locator("#messages li" + (f".{kind}" if kind else ""))

    def sees(self, kind: str, text: str, timeout: int = UI_WAIT) -> None:
        """A message of ``kind`` whose text (time stamp aside) contains ``text`` appears."""
        expect(self.messages(kind).filter(has_text=text).first).to_be_visible(timeout=timeout)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def pages(browser):
    opened: list[ChatPage] = []

    def open_page(url: str, **kwargs) -> ChatPage:
        page = ChatPage(browser, url, **kwargs)
        opened.append(page)
        return page

    yield open_page
    for page in opened:
        page.close()


def url_of(server: ServerProcess) -> str:
    return f"http://127.0.0.1:{web_port(server)}/"


INJECTION = "<img src=x onerror=alert(1)>"


def test_two_pages_and_a_terminal_chat_in_one_room(start_server, clients, pages, tmp_path):
    server = start_server("--web-port", "0")
    url = url_of(server)
    carol = clients(server)
    carol.send("/nick carol")
    carol.expect("*** You are now known as carol")

    alice = pages(url)
    alice.say("/nick alice")
    expect(alice.page.locator("#nick-name")).to_have_text("alice", timeout=UI_WAIT)
    bob = pages(url)
    bob.say("/nick bob")
    expect(bob.page.locator("#nick-name")).to_have_text("bob", timeout=UI_WAIT)
    carol.until(lambda l: l.endswith(" is now known as bob"))

    # The member list and the room list come from /who and /rooms (and presence lines).
    for page in (alice, bob):
        expect(page.page.locator("#members li")).to_have_count(3, timeout=UI_WAIT)
        expect(page.page.locator("#members")).to_contain_text("carol")
    expect(alice.page.locator("#rooms li.current")).to_contain_text("lobby3")

    alice.say("hi everyone, the build is green")
    bob.sees("chat", "alice: hi everyone, the build is green")
    carol.until(lambda l: l == "alice: hi everyone, the build is green")
    alice.sees("chat.self", "hi everyone, the build is green")  # the sender's own line, shown locally

    carol.send("nice, shipping the relay now")
    alice.sees("chat", "carol: nice, shipping the relay now")
    bob.sees("chat", "carol: nice, shipping the relay now")

    bob.say("/me is reviewing the WebSocket gateway")
    alice.sees("action", "* bob is reviewing the WebSocket gateway")
    carol.until(lambda l: l == "* bob is reviewing the WebSocket gateway")

    carol.send("/msg alice lunch at 12?")
    alice.sees("private", "carol: lunch at 12?")
    expect(bob.messages("private")).to_have_count(0)

    # HTML from the network is text: shown literally, no element made, no dialog.
    carol.send(INJECTION)
    alice.sees("chat", "carol: " + INJECTION)
    bob.sees("chat", "carol: " + INJECTION)
    bob.say("did you see " + INJECTION + " ?")
    carol.until(lambda l: l == "bob: did you see " + INJECTION + " ?")
    alice.sees("chat", "bob: did you see " + INJECTION)
    for page in (alice, bob):
        assert page.page.locator("#messages img").count() == 0
        assert page.dialogs == []

    alice.say("/msg carol yes, 12 works")
    alice.sees("private", "carol: yes, 12 works")  # shown as the private message it is
    carol.until(lambda l: l == "*alice* yes, 12 works")

    # History: arrow up brings back the last lines sent, in order.
    alice.page.click("#input")
    alice.page.keyboard.press("ArrowUp")
    expect(alice.page.locator("#input")).to_have_value("/msg carol yes, 12 works")
    alice.page.keyboard.press("ArrowUp")
    expect(alice.page.locator("#input")).to_have_value("hi everyone, the build is green")
    alice.page.keyboard.press("ArrowDown")
    alice.page.keyboard.press("ArrowDown")
    expect(alice.page.locator("#input")).to_have_value("")

    shot = SCREENSHOT if os.environ.get("GEVENTCHAT_UPDATE_SCREENSHOT") else tmp_path / "screenshot.png"
    shot.parent.mkdir(exist_ok=True)
    alice.page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000

    # /join moves a page to another room: the others see it leave, its chat stays there.
    bob.say("/join #dev")
    expect(bob.page.locator("#room-name")).to_have_text("#dev", timeout=UI_WAIT)
    bob.sees("notice", "You are now in #dev")
    carol.until(lambda l: l == "*** bob left lobby")
    expect(alice.page.locator("#members li")).to_have_count(2, timeout=UI_WAIT)
    expect(bob.page.locator("#members li")).to_have_count(1, timeout=UI_WAIT)
    expect(bob.page.locator("#rooms li.current")).to_contain_text("#dev1", timeout=UI_WAIT)
    bob.say("anyone in dev?")
    carol.send("/join #dev")
    carol.until(lambda l: l == "*** You are now in #dev")
    bob.sees("notice", "carol joined #dev")
    bob.say("welcome to dev, carol")
    carol.until(lambda l: l == "bob: welcome to dev, carol")
    alice.say("still in the lobby")
    carol.send("/who")
    assert carol.until(lambda l: l.startswith("*** Members of #dev"))[1] == "*** Members of #dev (2): bob carol"
    expect(alice.messages("chat").filter(has_text="anyone in dev?")).to_have_count(0)
    expect(alice.messages("chat").filter(has_text="welcome to dev")).to_have_count(0)
    for page in (alice, bob):
        assert page.errors == [], page.errors


def test_the_page_reconnects_after_the_server_restarts(start_server, clients, pages):
    server = start_server("--web-port", "0")
    port = web_port(server)
    page = pages(f"http://127.0.0.1:{port}/")
    page.say("/nick dora")
    expect(page.page.locator("#nick-name")).to_have_text("dora", timeout=UI_WAIT)
    page.say("/join #ops")
    expect(page.page.locator("#room-name")).to_have_text("#ops", timeout=UI_WAIT)

    assert server.stop() == 0
    expect(page.page.locator("#status")).to_have_attribute("data-state", "disconnected", timeout=UI_WAIT)
    expect(page.page.locator("#banner")).to_be_visible()
    expect(page.page.locator("#banner")).to_contain_text("Reconnecting")
    page.sees("notice", "Server shutting down")

    again = start_server("--web-port", str(port))
    page.wait_connected(timeout=20_000)
    # It takes back its nickname and room by itself.
    expect(page.page.locator("#nick-name")).to_have_text("dora", timeout=UI_WAIT)
    expect(page.page.locator("#room-name")).to_have_text("#ops", timeout=UI_WAIT)
    expect(page.page.locator("#banner")).to_be_hidden()
    erin = clients(again)
    erin.send("/join #ops")
    erin.until(lambda l: l == "*** You are now in #ops")
    page.say("back again")
    erin.until(lambda l: l == "dora: back again")
    erin.send("welcome back")
    page.sees("chat", f"{erin.nick}: welcome back")
    assert page.errors == []


def test_exit_leaves_without_reconnecting(start_server, clients, pages):
    server = start_server("--web-port", "0")
    watcher = clients(server)
    page = pages(url_of(server))
    watcher.until(lambda l: l.endswith(" joined lobby"))
    page.say("exit")
    expect(page.page.locator("#status")).to_have_attribute("data-state", "left", timeout=UI_WAIT)
    watcher.until(lambda l: l.endswith(" quit"))
    time.sleep(1.5)  # past the first reconnect delay: it must not come back by itself
    watcher.expect_nothing()
    page.page.click("#reconnect-now")
    page.wait_connected()
    watcher.until(lambda l: l.endswith(" joined lobby"))


@pytest.fixture
def elsewhere():
    """Another web server on loopback: its pages are other origins than the chat's
    (``http://127.0.0.1:PORT`` and ``http://localhost:PORT``). Loopback because chromium
    would not let a public page reach 127.0.0.1 at all."""

    class Blank(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>elsewhere</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Blank)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_a_cross_origin_page_cannot_open_the_socket(start_server, browser, elsewhere):
    server = start_server("--web-port", "0", "--web-origins", f"http://127.0.0.1:{elsewhere}")
    target = f"ws://127.0.0.1:{web_port(server)}/ws"
    probe = """url => new Promise(resolve => {
        const ws = new WebSocket(url);
        ws.onmessage = e => { resolve("open: " + e.data); ws.close(); };
        ws.onclose = e => resolve("closed: " + e.code);
    })"""
    context = browser.new_context()
    try:
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(f"http://localhost:{elsewhere}/")  # not listed: refused
        assert page.evaluate(probe, target) == "closed: 1006"
        assert any("Unexpected response code: 403" in text for text in console), console
        refused = f"(origin 'http://localhost:{elsewhere}' not allowed)"
        server.wait_for(lambda l: l.startswith("Refused WebSocket from 127.0.0.1:") and l.endswith(refused))
        assert not any("New connection" in line for line in server.stdout_lines())

        page.goto(f"http://127.0.0.1:{elsewhere}/")  # listed in --web-origins
        assert page.evaluate(probe, target).startswith("open: *** Welcome, ")
    finally:
        context.close()


def test_the_page_is_usable_on_a_phone(start_server, clients, pages):
    server = start_server("--web-port", "0")
    phone = pages(url_of(server), viewport=(390, 740))
    # The side panel is a drawer behind a button; the input and the log fill the screen.
    expect(phone.page.locator("#toggle-side")).to_be_visible()
    expect(phone.page.locator("#side")).not_to_be_in_viewport()
    box = phone.page.locator("#input").bounding_box()
    assert box is not None and box["width"] > 200 and box["y"] + box["height"] <= 740
    width = phone.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "no sideways scrolling"
    phone.page.click("#toggle-side")
    expect(phone.page.locator("#members li")).to_have_count(1, timeout=UI_WAIT)
    expect(phone.page.locator("#side")).to_be_in_viewport(ratio=1)
    phone.page.click("#toggle-side")  # (the drawer closes from its button too)
    expect(phone.page.locator("#side")).not_to_be_in_viewport()


def test_with_tls_the_page_is_served_over_https_and_chats_over_wss(start_server, clients, pages, tmp_path):
    trustme = pytest.importorskip("trustme")
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    server = start_server(
        "--web-port", "0", "--no-presence", "--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "key.pem")
    )
    page = pages(f"https://127.0.0.1:{web_port(server)}/", ignore_https_errors=True)  # a throwaway CA
    assert page.page.evaluate("location.protocol") == "https:"
    page.say("/who")
    page.sees("notice", "Members of lobby (1): " + page.nick)
    assert page.errors == []


def test_sending_keeps_the_keyboard_in_the_input_box(start_server, clients, pages):
    server = start_server("--web-port", "0")
    carol = clients(server)
    page = pages(url_of(server))
    carol.until(lambda l: l.endswith(" joined lobby"))
    expect(page.page.locator("#input")).to_be_focused()
    # Send with the button (a mouse, or a thumb on a phone): the box keeps the focus, so the
    # next line can be typed at once (and a phone's keyboard does not fold away).
    page.page.fill("#input", "sent with the button")
    page.page.click("#send")
    carol.until(lambda l: l.endswith(": sent with the button"))
    expect(page.page.locator("#input")).to_be_focused()
    page.page.keyboard.type("and typed straight on")
    page.page.keyboard.press("Enter")
    carol.until(lambda l: l.endswith(": and typed straight on"))
    # Tab completes every command, /stats too.
    page.page.keyboard.type("/st")
    page.page.keyboard.press("Tab")
    expect(page.page.locator("#input")).to_have_value("/stats")
    assert page.errors == []


def press_until_focused(page, key: str, target, tries: int, what: str) -> None:
    """Press ``key`` until the keyboard focus is inside ``target`` (at most ``tries`` times)."""
    for _ in range(tries):
        page.keyboard.press(key)
        if target.evaluate("el => el.contains(document.activeElement)"):
            return
    raise AssertionError(f"{key} never reached {what}")


def test_the_room_and_member_lists_work_from_the_keyboard(start_server, clients, pages):
    server = start_server("--web-port", "0")
    dave = clients(server)
    dave.send("/nick dave", "/join #ops")
    dave.until(lambda l: l == "*** You are now in #ops")
    page = pages(url_of(server))
    page.page.click("#refresh")
    ops = page.page.locator("#rooms li").filter(has_text="#ops")
    expect(ops).to_have_count(1)
    # Tab reaches the room entries; Enter on one joins it and gives the input box the focus.
    press_until_focused(page.page, "Tab", ops, 12, "the room #ops in the list")
    page.page.keyboard.press("Enter")
    expect(page.page.locator("#room-name")).to_have_text("#ops")
    expect(page.page.locator("#input")).to_be_focused()
    # A member entry too: Enter starts a private message to them.
    member = page.page.locator("#members li").filter(has_text="dave")
    expect(member).to_have_count(1)
    press_until_focused(page.page, "Shift+Tab", member, 6, "dave in the member list")  # back from the input box
    page.page.keyboard.press("Enter")
    expect(page.page.locator("#input")).to_have_value("/msg dave ")
    expect(page.page.locator("#input")).to_be_focused()
    assert page.errors == []


def test_other_rooms_counts_follow_people_moving_through_yours(start_server, clients, pages):
    server = start_server("--web-port", "0")
    bob = clients(server)
    carol = clients(server)
    carol.send("/join #dev")
    carol.until(lambda l: l == "*** You are now in #dev")
    page = pages(url_of(server))
    dev = page.page.locator("#rooms li").filter(has_text="#dev").locator(".count")
    lobby = page.page.locator("#rooms li.current .count")
    expect(dev).to_have_text("1")
    expect(lobby).to_have_text("2")
    # bob leaves the lobby for #dev: the page sees "bob left lobby", and #dev's count (a
    # room it has no presence lines from) follows long before the minute's refresh.
    bob.send("/join #dev")
    expect(lobby).to_have_text("1")
    expect(dev).to_have_text("2")
    # and back: someone joining from #dev leaves one fewer there.
    carol.send("/join lobby")
    expect(lobby).to_have_text("2")
    expect(dev).to_have_text("1")
    # The page's own /rooms never shows in the log.
    expect(page.messages("notice").filter(has_text="#dev (")).to_have_count(0)
    assert page.errors == []


def test_failed_reconnect_attempts_do_not_fill_the_log(start_server, pages):
    server = start_server("--web-port", "0")
    port = web_port(server)
    page = pages(f"http://127.0.0.1:{port}/")
    assert server.stop() == 0
    page.sees("local", "The server went away.")
    # The attempts at about 1 s and 3 s find nobody there: the banner counts down to the
    # next, and the log keeps its one line about the connection going.
    time.sleep(4.5)
    expect(page.page.locator("#banner")).to_contain_text("Reconnecting")
    expect(page.messages("local")).to_have_count(1)
    start_server("--web-port", str(port))
    page.wait_connected(timeout=20_000)
    expect(page.messages("local")).to_have_count(1)
    assert page.errors == []


def test_reading_back_the_page_stays_put_and_says_new_lines_came(start_server, clients, pages):
    server = start_server("--web-port", "0")
    carol = clients(server)
    page = pages(url_of(server), viewport=(900, 400))
    carol.until(lambda l: l.endswith(" joined lobby"))
    carol.send(*[f"line {i} of a long scrollback" for i in range(60)])
    page.sees("chat", "line 59 of a long scrollback")
    last = page.messages("chat").last
    expect(last).to_be_in_viewport()  # it follows the newest line
    jump = page.page.locator("#jump")
    expect(jump).to_be_hidden()

    page.page.locator("#messages").evaluate("el => { el.scrollTop = 0; }")  # read back
    carol.send("news while you read")
    expect(page.messages("chat").filter(has_text="news while you read")).to_have_count(1)
    expect(jump).to_be_visible()
    assert page.page.locator("#messages").evaluate("el => el.scrollTop") == 0  # not pulled down
    jump.click()
    expect(page.messages("chat").last).to_be_in_viewport()
    expect(jump).to_be_hidden()
    expect(page.page.locator("#input")).to_be_focused()
    # Scrolling down by hand to the end hides it too.
    page.page.locator("#messages").evaluate("el => { el.scrollTop = 0; }")
    carol.send("more news")
    expect(jump).to_be_visible()
    page.page.locator("#messages").evaluate("el => { el.scrollTop = el.scrollHeight; }")
    expect(jump).to_be_hidden()
    assert page.errors == []


def right_edge(box: dict) -> float:
    return box["x"] + box["width"]


def test_the_longest_names_fit_the_phone_drawer(start_server, clients, pages):
    server = start_server("--web-port", "0")
    room = "#a-room-with-the-longest-name.ok"  # 32 characters, the most a room may have
    other = clients(server)
    other.send("/nick Maximiliana_Bartholomew_Smi", f"/join {room}")
    other.until(lambda l: l == f"*** You are now in {room}")
    phone = pages(url_of(server), viewport=(390, 844), is_mobile=True, has_touch=True)
    phone.say("/nick Wolfeschlegelsteinhausenberg")
    phone.say(f"/join {room}")
    expect(phone.page.locator("#room-name")).to_have_text(room)
    expect(phone.page.locator("#members li")).to_have_count(2)
    phone.page.tap("#toggle-side")
    side = phone.page.locator("#side")
    expect(side).to_be_in_viewport(ratio=1)
    right = right_edge(side.bounding_box())
    # The room's count stays in view (the name gives way, with an ellipsis)...
    count = phone.page.locator("#rooms li.current .count")
    expect(count).to_have_text("2")
    assert right_edge(count.bounding_box()) <= right
    # ... and each name ends inside its row, clear of the "(you)" after one of them.
    for row in phone.page.locator("#members li").all():
        name = row.locator(".nick").bounding_box()
        entry = row.locator(".entry").bounding_box()
        assert right_edge(name) <= right_edge(entry) + 0.5, (name, entry)
        assert right_edge(entry) <= right
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= 390
    assert phone.errors == []


# --------------------------------------------------------------- the first five minutes


def test_help_is_in_columns_and_the_header_names_a_room_as_it_is(start_server, pages):
    server = start_server("--web-port", "0")
    page = pages(url_of(server))
    page.say("/help")
    rows = page.messages("columns")
    expect(rows.filter(has_text="/nick NAME")).to_have_count(1)
    expect(rows.filter(has_text="//text")).to_have_count(1)
    # Each row's second column (the summary, after the padded usage) starts at one x.
    starts = rows.evaluate_all(
        r"""rows => rows.map(row => {
            const node = row.querySelector('.text').firstChild;
            const summary = /^ *\S+(?: \S+)* {2,}/.exec(node.textContent)[0].length;
            const range = document.createRange();
            range.setStart(node, summary);
            range.setEnd(node, summary + 1);
            return range.getBoundingClientRect().left;
        })"""
    )
    assert len(starts) >= 9, starts
    assert max(starts) - min(starts) < 1.0, starts
    # Room "#dev" is shown as "#dev" (the header's label is a word, not another "#").
    page.say("/join #dev")
    room = page.page.locator("#room-name")
    expect(room).to_have_text("#dev")
    label = room.evaluate("el => getComputedStyle(el, '::before').content")
    assert "#" not in label and "room" in label, label
    assert page.errors == []


def test_a_private_message_sent_looks_private_and_the_nickname_changes_by_a_click(start_server, clients, pages):
    server = start_server("--web-port", "0")
    carol = clients(server)
    carol.send("/nick carol")
    carol.expect("*** You are now known as carol")
    page = pages(url_of(server))
    page.say("/msg carol the password is in the safe")
    carol.until(lambda l: l == f"*{page.nick}* the password is in the safe")
    sent = page.messages("private").filter(has_text="the password is in the safe")
    expect(sent).to_have_count(1)
    expect(sent).to_have_class("msg private self outgoing")
    expect(sent.locator(".tag")).to_have_text("private to")
    expect(sent.locator(".nick")).to_have_text("carol")
    expect(page.messages("notice").filter(has_text="To carol")).to_have_count(0)
    # Your name in the header: a click puts "/nick NAME" in the box, NAME selected.
    old = page.nick
    page.page.click("#nick-name")
    box = page.page.locator("#input")
    expect(box).to_be_focused()
    expect(box).to_have_value(f"/nick {old}")
    assert box.evaluate("el => el.value.slice(el.selectionStart, el.selectionEnd)") == old
    page.page.keyboard.type("zed")
    page.page.keyboard.press("Enter")
    expect(page.page.locator("#nick-name")).to_have_text("zed")
    carol.until(lambda l: l == f"*** {old} is now known as zed")
    # Yourself in the member list does the same.
    page.page.locator("#members li.me .entry").click()
    expect(box).to_have_value("/nick zed")
    assert page.errors == []


def test_lobby_stays_in_the_room_list_when_empty(start_server, clients, pages):
    server = start_server("--web-port", "0")
    dave = clients(server)
    dave.send("/join #ops")
    dave.until(lambda l: l == "*** You are now in #ops")
    page = pages(url_of(server))
    page.say("/join #dev")
    expect(page.page.locator("#room-name")).to_have_text("#dev")
    page.page.click("#refresh")  # the server lists #dev and #ops only: nobody is in lobby
    expect(page.page.locator("#rooms li")).to_have_count(3)
    lobby = page.page.locator("#rooms li").filter(has_text="lobby")
    expect(lobby.locator(".count")).to_have_text("0")
    lobby.locator(".entry").click()
    expect(page.page.locator("#room-name")).to_have_text("lobby")
    assert page.errors == []


def test_the_phone_drawer_has_a_backdrop_that_closes_it(start_server, pages):
    server = start_server("--web-port", "0")
    phone = pages(url_of(server), viewport=(390, 740), is_mobile=True, has_touch=True)
    side, backdrop = phone.page.locator("#side"), phone.page.locator("#backdrop")
    expect(backdrop).to_be_hidden()
    phone.page.tap("#toggle-side")
    expect(side).to_be_in_viewport(ratio=1)
    expect(backdrop).to_be_visible()
    # It dims the page beside the drawer and takes the tap there (the input box included).
    hit = phone.page.evaluate("document.elementFromPoint(370, 700).id")
    assert hit == "backdrop", hit
    phone.page.tap("#backdrop", position={"x": 370, "y": 400})
    expect(side).not_to_be_in_viewport()
    expect(backdrop).to_be_hidden()
    expect(phone.page.locator("#toggle-side")).to_have_attribute("aria-expanded", "false")
    # Escape closes it too.
    phone.page.tap("#toggle-side")
    expect(side).to_be_in_viewport(ratio=1)
    phone.page.keyboard.press("Escape")
    expect(side).not_to_be_in_viewport()
    assert phone.errors == []


def test_a_replay_block_is_history_dimmed_in_local_time_and_not_news(start_server, clients, pages):
    server = start_server("--web-port", "0", "--history-on-join", "20", "--no-presence")
    carol, dave = clients(server), clients(server)
    carol.send(*[f"old line {i} for you" for i in range(30)], "/me waved earlier")
    dave.until(lambda line: line == f"* {carol.nick} waved earlier")
    dave.send("/history 1")
    dave.expect("*** Recent messages in lobby (1):")
    stamp = dave.line()[5:24]  # the UTC time the server relayed it: YYYY-MM-DD HH:MM:SS
    dave.expect("*** End of recent messages")
    utc = time.strptime(stamp, "%Y-%m-%d %H:%M:%S")
    minutes = (utc.tm_hour * 60 + utc.tm_min + 5 * 60 + 30) % (24 * 60)  # Asia/Kolkata is UTC+5:30
    shown = f"{minutes // 60:02d}:{minutes % 60:02d}"

    page = pages(url_of(server), viewport=(900, 400), timezone_id="Asia/Kolkata")
    history = page.messages("history")
    expect(history.filter(has_text=f"{carol.nick} waved earlier")).to_have_count(1)
    expect(page.messages("history.chat")).to_have_count(19)
    expect(history.first).to_contain_text("Recent messages in lobby (20):")
    expect(history.last).to_contain_text("End of recent messages")
    waved = history.filter(has_text="waved earlier")
    assert waved.locator("time").text_content() == shown  # local time, from the UTC stamp
    assert float(waved.evaluate("el => getComputedStyle(el).opacity")) < 1  # dimmed
    expect(page.messages("chat").filter(has_text="old line 29 for you")).to_have_class("msg chat history")

    page.say("/join elsewhere")
    page.sees("notice", "You are now in elsewhere")
    page.say("/join lobby")
    expect(page.messages("history").filter(has_text="Recent messages in lobby (20):")).to_have_count(2)
    expect(page.messages("history").filter(has_text="End of recent messages")).to_have_count(2)
    # Reading back while a block comes (the reply to /history): it is not news.
    page.page.locator("#messages").evaluate("el => { el.scrollTop = el.scrollHeight; }")
    jump = page.page.locator("#jump")
    expect(jump).to_be_hidden()
    page.page.locator("#messages").evaluate("el => { el.scrollTop = 0; }")
    page.say("/history 3")
    expect(page.messages("history").filter(has_text="Recent messages in lobby (3):")).to_have_count(1)
    expect(page.messages("history").filter(has_text="End of recent messages")).to_have_count(3)
    expect(jump).to_be_hidden()
    assert page.page.locator("#messages").evaluate("el => el.scrollTop") == 0  # not pulled down either
    carol.send(f"live news for {page.nick}")  # a live line is news again (and a mention)
    page.sees("chat", "live news for")
    expect(jump).to_be_visible()
    expect(page.messages("chat").filter(has_text="live news for")).to_have_class("msg chat mention")
    assert page.errors == []
