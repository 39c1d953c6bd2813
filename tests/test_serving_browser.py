"""The chat page in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`)
driven by Selenium opens the page, sends messages, and sees the reply stream in."""

from __future__ import annotations

import os
import shutil
import time

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from scratchgpt.serving import create_app, load_served_model  # noqa: E402
from test_serving import LiveServer, make_checkpoints  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip(
        "no headless browser: install Debian's chromium and chromium-driver packages "
        "(apt-get install chromium chromium-driver; `make test` does this where it can)",
        allow_module_level=True,
    )

# Records every text the reply bubbles show, so the test can tell a streamed reply (several
# growing texts) from one that appeared all at once.
RECORD_UPDATES = """
window.__updates = [];
new MutationObserver(() => {
  for (const b of document.querySelectorAll('.assistant')) {
    const seen = window.__updates;
    if (!seen.length || seen[seen.length - 1] !== b.textContent) seen.push(b.textContent);
  }
}).observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true});
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    torch.set_num_threads(1)
    paths = make_checkpoints(tmp_path_factory.mktemp("browser"))
    served = load_served_model(paths["base"])
    # Space the tokens out so the page visibly receives them one by one, not in one read.
    served.model.register_forward_hook(lambda *_: time.sleep(0.03))
    with LiveServer(create_app(served)) as live:
        yield live


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium must not try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _send(browser, text: str) -> None:
    box = browser.find_element(By.ID, "input")
    box.send_keys(text)
    browser.find_element(By.ID, "send").click()


def _wait_idle(browser) -> None:
    WebDriverWait(browser, 30).until(
        lambda d: (
            d.find_element(By.ID, "send").is_enabled()
            and not d.find_elements(By.CSS_SELECTOR, '[data-streaming="true"]')
        )
    )


def test_chat_page_streams_a_reply(server, browser):
    client = server.client()
    browser.get(server.url + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "model").text == "model: base")
    browser.execute_script(RECORD_UPDATES)
    tokens = browser.find_element(By.ID, "max-tokens")
    tokens.clear()
    tokens.send_keys("12")

    _send(browser, "Hello there")
    _wait_idle(browser)
    bubbles = browser.find_elements(By.CSS_SELECTOR, ".assistant")
    first = [{"role": "user", "content": "Hello there"}]
    want = client.chat.completions.create(
        model="base", messages=first, max_tokens=12, temperature=0
    )
    reply = want.choices[0].message.content
    assert reply.strip()
    assert bubbles[-1].get_attribute("textContent") == reply
    updates = browser.execute_script("return window.__updates")
    assert updates[-1] == reply
    assert len([u for u in updates if u]) >= 2, updates  # it grew piece by piece

    # The conversation is kept: the second request carries the first turn.
    _send(browser, "And then?")
    _wait_idle(browser)
    second = [
        *first,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And then?"},
    ]
    want2 = client.chat.completions.create(
        model="base", messages=second, max_tokens=12, temperature=0
    )
    bubbles = browser.find_elements(By.CSS_SELECTOR, ".assistant")
    assert len(bubbles) == 2
    assert bubbles[-1].get_attribute("textContent") == want2.choices[0].message.content


def test_chat_page_shows_errors(server, browser):
    browser.get(server.url + "/")
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.ID, "model").text.startswith("model:")
    )
    tokens = browser.find_element(By.ID, "max-tokens")
    tokens.clear()
    tokens.send_keys("5000")
    _send(browser, "Hello")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".error"))
    error = browser.find_element(By.CSS_SELECTOR, ".error").text
    assert "400" in error and "maximum context length is 64" in error
    assert not browser.find_elements(By.CSS_SELECTOR, ".assistant")


def _set_max_tokens(browser, n: int) -> None:
    tokens = browser.find_element(By.ID, "max-tokens")
    tokens.clear()
    tokens.send_keys(str(n))


def test_a_long_chat_on_a_small_context_keeps_going(server, browser):
    # Each message is about 15 tokens: three of them and the replies overflow the 64-token
    # window with 20 tokens kept for the reply; the page goes on, saying what it left out.
    browser.get(server.url + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "model").text == "model: base")
    _set_max_tokens(browser, 20)
    for i in range(4):
        _send(browser, f"Message {i}: tell me one more thing about the long history of the sea")
        _wait_idle(browser)
        assert not browser.find_elements(By.CSS_SELECTOR, ".error"), i
    assert len(browser.find_elements(By.CSS_SELECTOR, ".assistant")) == 4
    notes = browser.find_elements(By.CSS_SELECTOR, ".note")
    assert notes and "left out" in notes[0].text


@pytest.fixture
def gated(tmp_path_factory):
    """A server whose generation halts after its third forward pass until ``gate`` is set."""
    import threading

    paths = make_checkpoints(tmp_path_factory.mktemp("gated"))
    served = load_served_model(paths["base"])
    gate, calls = threading.Event(), []

    def hook(*_):
        calls.append(1)
        if len(calls) >= 3:
            gate.wait(30)

    served.model.register_forward_hook(hook)
    with LiveServer(create_app(served)) as live:
        # The engine's warm-up runs forward passes of its own: count only the request's, so the
        # reply halts after its prefill and two decode steps, with text on the page.
        deadline = time.monotonic() + 120
        while not live.app.state.engine.ready:
            assert time.monotonic() < deadline, "the engine did not finish warming up"
            time.sleep(0.05)
        calls.clear()
        try:
            yield live, gate
        finally:
            gate.set()


def test_a_stopped_reply_is_marked_as_stopped(gated, browser):
    live, gate = gated
    browser.get(live.url + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "model").text == "model: base")
    _set_max_tokens(browser, 30)
    _send(browser, "Hello there")
    bubble = WebDriverWait(browser, 30).until(
        lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, ".assistant") if b.text]
    )[0]
    browser.find_element(By.ID, "stop").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "send").is_enabled())
    gate.set()
    assert bubble.get_attribute("data-stopped") == "true"
    after = browser.execute_script(
        "return getComputedStyle(arguments[0], '::after').content", bubble
    )
    assert "stopped" in after
    assert not browser.find_elements(By.CSS_SELECTOR, ".error")


@pytest.fixture
def keyed(tmp_path_factory):
    paths = make_checkpoints(tmp_path_factory.mktemp("keyed"))
    with LiveServer(create_app(load_served_model(paths["base"]), api_key="s3cret")) as live:
        yield live


def test_the_page_asks_for_the_key_before_any_error(keyed, browser):
    browser.get(keyed.url + "/")
    model = browser.find_element(By.ID, "model")
    WebDriverWait(browser, 30).until(lambda d: "needs an API key" in model.text)
    assert "401" not in model.text and not browser.find_elements(By.CSS_SELECTOR, ".error")
    # Sending without the key asks for it again and keeps the text.
    _send(browser, "Hello")
    assert browser.find_element(By.ID, "input").get_attribute("value") == "Hello"
    assert not browser.find_elements(By.CSS_SELECTOR, ".msg")
    # A wrong key is told apart, still without an error in the conversation.
    key = browser.find_element(By.ID, "api-key")
    key.send_keys("wrong\t")
    WebDriverWait(browser, 30).until(lambda d: "refused" in model.text)
    key.clear()
    key.send_keys("s3cret\t")
    WebDriverWait(browser, 30).until(lambda d: model.text == "model: base")
    _set_max_tokens(browser, 4)
    browser.find_element(By.ID, "send").click()
    _wait_idle(browser)
    assert [b.text for b in browser.find_elements(By.CSS_SELECTOR, ".user")] == ["Hello"]
    assert browser.find_elements(By.CSS_SELECTOR, ".assistant")
    assert not browser.find_elements(By.CSS_SELECTOR, ".error")
