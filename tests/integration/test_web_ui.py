"""The chat page in a real headless browser: Debian's chromium driven by Playwright."""

import re
import threading
import time

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from slmserve.settings import Settings
from tests.integration.conftest import LiveServer

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def page(server, tmp_path):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{server.url}/ui")
        yield page
        page.screenshot(path=str(tmp_path / "ui.png"))
        browser.close()


def wait_running(server, predicate, seconds: float = 15) -> float:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = server.metric("slmserve_requests_running")
        if predicate(value):
            return value
        time.sleep(0.05)
    return server.metric("slmserve_requests_running")


def test_streamed_answer_stop_aborts_on_the_server_and_history_continues(server, page):
    expect(page.locator("#model")).to_have_text("smollm2-135m-instruct")
    page.locator("#settings summary").click()
    page.fill("#max_tokens", "400")
    page.fill("#temperature", "0")
    page.fill("#input", "Tell me a very long story about a dragon.")
    page.click("#send")
    answer = page.locator(".msg.assistant").last
    # Text appears while the answer is still being generated (the bubble's status line before it is not text).
    writing = ".msg.assistant[data-state=writing]"
    page.wait_for_function(f"(document.querySelector('{writing}')?.textContent || '').length > 30")
    assert wait_running(server, lambda v: v >= 1) >= 1
    expect(page.locator("#stop")).to_be_enabled()
    page.click("#stop")
    assert wait_running(server, lambda v: v == 0) == 0  # the server aborted the request
    expect(answer).to_have_class("msg assistant stopped")
    streamed = answer.text_content()
    assert 30 < len(streamed) < 400 * 8

    page.fill("#max_tokens", "20")
    page.fill("#input", "Give the dragon a name.")
    page.press("#input", "Enter")
    expect(page.locator("#send")).to_be_enabled(timeout=30_000)
    expect(page.locator(".msg.user")).to_have_count(2)
    expect(page.locator(".msg.assistant")).to_have_count(2)
    assert page.locator(".msg.assistant").last.text_content()
    expect(page.locator("#stats")).to_contain_text("tok/s")


def test_a_first_visit_says_what_to_do_and_an_example_asks_the_model(page):
    hint = page.locator("#empty")
    expect(hint).to_be_visible()
    expect(hint).to_contain_text("Enter sends")
    expect(hint.locator(".example")).to_have_count(3)
    page.locator("#settings summary").click()
    page.fill("#max_tokens", "8")
    hint.locator(".example").first.click()
    expect(page.locator(".msg.user")).to_have_text("What is the capital of France?")
    expect(hint).to_be_hidden()
    expect(page.locator("#send")).to_be_enabled(timeout=30_000)
    assert page.locator(".msg.assistant").text_content()
    page.click("#clear")
    expect(hint).to_be_visible()  # a new chat starts from the hint again


@pytest.fixture(scope="module")
def one_slot_server():
    live = LiveServer(Settings(max_running=1, max_waiting=4)).start()
    yield live
    live.stop()


# Every data-state an answer's bubble takes, in order, recorded in the page.
RECORD_STATES = """() => {
  window.states = [];
  new MutationObserver((changes) => {
    for (const c of changes) {
      const state = c.target.dataset.state;
      if (state && state !== window.states.at(-1)) window.states.push(state);
    }
  }).observe(document.getElementById("log"), { subtree: true, attributes: true, attributeFilter: ["data-state"] });
}"""


def test_the_answer_says_whether_the_server_has_taken_it_until_it_writes(one_slot_server, tmp_path):
    url, started, release = one_slot_server.url, threading.Event(), threading.Event()

    def hold_the_slot() -> None:  # the server's one slot, busy until released
        body = {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 1500,
                "ignore_eos": True, "stream": True}  # fmt: skip
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    started.set()
                if release.is_set():
                    return

    holder = threading.Thread(target=hold_the_slot, daemon=True)
    holder.start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{url}/ui")
            page.evaluate(RECORD_STATES)
            held = []  # the page's request, held back before it reaches the server
            page.route("**/v1/chat/completions", lambda route: held.append(route))
            assert started.wait(60)
            page.fill("#input", "Hello")
            page.click("#send")
            bubble = page.locator(".msg.assistant").last
            expect(bubble).to_have_attribute("data-state", "sending")
            expect(bubble.locator(".status")).to_contain_text(re.compile(r"Waiting for the server… [1-9]\d* s"))
            while not held:
                page.wait_for_timeout(20)
            held[0].continue_()
            # The server took it (the headers came) but its one slot is busy: the request waits in the engine.
            expect(bubble).to_have_attribute("data-state", "queued")
            expect(bubble.locator(".status")).to_contain_text("Accepted: waiting for a free slot")
            expect(bubble.locator(".status")).to_contain_text("server: 1 running, 1 waiting")
            page.screenshot(path=str(tmp_path / "queued.png"))
            release.set()
            expect(page.locator("#send")).to_be_enabled(timeout=60_000)
            assert bubble.text_content() and bubble.get_attribute("data-state") is None
            assert page.evaluate("window.states") == ["sending", "queued", "writing"]
            expect(page.locator("#stats")).to_contain_text("tok/s")
        finally:
            release.set()
            browser.close()
    holder.join(timeout=60)


def test_errors_are_shown_readably(page):
    page.fill("#input", "I hate dragons")
    page.click("#send")
    expect(page.locator("#error")).to_have_text("Prompt contains inappropriate content")
    expect(page.locator(".msg.assistant")).to_have_count(0)
    page.locator("#settings summary").click()
    page.fill("#max_tokens", "100000")
    page.fill("#input", "Hello")
    page.click("#send")
    expect(page.locator("#error")).to_contain_text("context holds at most 2048")


@pytest.fixture(scope="module")
def keyed_server():
    live = LiveServer(Settings(api_keys="web:sk-web-page", max_running=2, max_waiting=4)).start()
    yield live
    live.stop()


def test_a_server_with_keys_asks_for_one_and_the_page_then_chats_with_it(keyed_server, tmp_path):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{keyed_server.url}/ui")
        expect(page.locator("#key-form")).to_be_visible()  # /v1/models answered 401
        expect(page.locator("#model")).to_have_text("")
        page.fill("#api-key", "sk-wrong")
        page.click("#key-form button")
        expect(page.locator("#key-form")).to_be_visible()
        expect(page.locator("#key-note")).to_have_text("That key was refused. ")
        page.fill("#api-key", "sk-web-page")
        page.click("#key-form button")
        expect(page.locator("#model")).to_have_text("smollm2-135m-instruct")
        expect(page.locator("#key-form")).to_be_hidden()
        page.locator("#settings summary").click()
        page.fill("#max_tokens", "8")
        page.fill("#input", "Hello")
        page.click("#send")
        expect(page.locator("#send")).to_be_enabled(timeout=30_000)
        assert page.locator(".msg.assistant").last.text_content()
        expect(page.locator("#error")).to_be_hidden()
        page.goto(f"{keyed_server.url}/ui/dashboard")  # the key is kept in the browser for the dashboard too
        expect(page.locator("#status")).to_contain_text("updated", timeout=10_000)
        expect(page.locator("#key-form")).to_be_hidden()
        page.screenshot(path=str(tmp_path / "keyed.png"))
        browser.close()


def test_the_pages_have_an_icon_and_the_browser_finds_it(server, page):
    icon = httpx.get(f"{server.url}/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.text.startswith("<svg")
    href = page.locator("link[rel=icon]").get_attribute("href")
    assert httpx.get(f"{server.url}{href}").status_code == 200


SAVED = {
    "system": "Be brief.",
    "model": "smollm2-135m-instruct",
    "history": [
        {"role": "user", "content": "Show code and a list."},
        {
            "role": "assistant",
            "model": "smollm2-135m-instruct",
            "content": "Here:\n\n```python\nprint('hi')\n```\n\n- one\n- **two**\n\n"
            '<img src=x onerror="window.pwned=1">',
        },
    ],
}


def test_the_conversation_survives_a_reload_renders_markdown_safely_and_tells_the_roles_apart(server, page):
    page.evaluate("saved => localStorage.setItem('slmserve-chat', JSON.stringify(saved))", SAVED)
    page.reload()
    expect(page.locator(".msg")).to_have_count(2)
    answer = page.locator(".msg.assistant")
    expect(answer.locator("pre code")).to_have_text("print('hi')")
    expect(answer.locator("li")).to_have_count(2)
    expect(answer.locator("strong")).to_have_text("two")
    assert answer.locator("img").count() == 0 or answer.locator("img").get_attribute("onerror") is None
    assert page.evaluate("window.pwned") is None  # the model's HTML is sanitized, never run
    role = "el => getComputedStyle(el, '::before').content"
    assert page.locator(".msg.user").evaluate(role) == '"You"'
    assert page.locator(".msg.assistant").evaluate(role) == '"smollm2-135m-instruct"'
    assert page.input_value("#system") == "Be brief."

    # The picker lists what /v1/models lists; a new turn goes on from the restored history.
    expect(page.locator("#model option")).to_have_count(1)
    assert page.input_value("#model") == "smollm2-135m-instruct"
    page.locator("#settings summary").click()
    page.fill("#max_tokens", "8")
    page.fill("#input", "And one more?")
    page.click("#send")
    expect(page.locator("#send")).to_be_enabled(timeout=30_000)
    expect(page.locator(".msg")).to_have_count(4)
    page.reload()
    expect(page.locator(".msg")).to_have_count(4)  # the new turn was saved too
    page.click("#clear")
    page.reload()
    expect(page.locator(".msg")).to_have_count(0)


@pytest.mark.parametrize(("path", "shows"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")])
def test_the_api_docs_render_from_the_package_without_internet(server, page, path, shows):
    elsewhere = []
    page.on("request", lambda r: r.url.startswith(("http://", "https://")) and not r.url.startswith(server.url)
            and elsewhere.append(r.url))  # fmt: skip
    page.goto(f"{server.url}{path}")
    expect(page.locator(shows).first).to_be_visible(timeout=20_000)
    assert page.locator(shows).count() > 10  # the routes are listed
    expect(page.get_by_text("/v1/chat/completions").first).to_be_attached()
    # No CDN, no web fonts. Redoc's footer asks for its "API docs by Redocly" logo from its CDN; the page renders
    # without it, as checked above.
    assert [url for url in elsewhere if url != "https://cdn.redoc.ly/redoc/logo-mini.svg"] == []
