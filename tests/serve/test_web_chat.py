"""The web chat page end to end in headless Chromium (Debian's `chromium`), driven over the
DevTools protocol: it loads, sends a message and shows the streamed greedy answer."""

import json
import shutil
import subprocess
import time
import urllib.request

import pytest
from serve_helpers import free_port, running_server

from fullchain.engine import Engine, SamplingParams

pytestmark = pytest.mark.slow


class DevTools:
    def __init__(self, ws) -> None:
        self.ws, self.next_id = ws, 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        return r["result"].get("value")


def wait_for(fn, seconds: float = 60):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (make test installs it: apt-get install chromium)")
    port = free_port()
    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--remote-allow-origins=*", f"--remote-debugging-port={port}",
         f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def page_ws():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=1) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
                return pages[0]["webSocketDebuggerUrl"] if pages else None
        except OSError:
            return None

    from websockets.sync.client import connect
    try:
        with connect(wait_for(page_ws, 30), max_size=None) as ws:
            yield DevTools(ws)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_page_streams_an_answer(browser, model_dir):
    engine = Engine.from_pretrained(model_dir)
    tok = engine.tokenizer
    messages = [{"role": "user", "content": "the quick brown fox"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    want = Engine(engine.model, tok).generate([ids], SamplingParams(max_tokens=24))[0]
    with running_server(engine, tok) as (url, _):
        browser.call("Page.enable")
        browser.call("Page.navigate", url=url + "/")
        wait_for(lambda: browser.js("document.getElementById('model').textContent") == "tiny")
        browser.js("""
            window.__updates = 0;
            new MutationObserver(() => window.__updates++).observe(
                document.getElementById('log'), {subtree: true, childList: true,
                                                 characterData: true});
            document.getElementById('temperature').value = '0';
            document.getElementById('max_tokens').value = '24';
            document.getElementById('input').value = 'the quick brown fox';
            document.getElementById('form').requestSubmit();
        """)
        state = "document.querySelector('.msg.assistant')?.dataset.state"
        wait_for(lambda: browser.js(state) in ("done", "error", "stopped"))
        assert browser.js(state) == "done"
        shown = browser.js("document.querySelector('.msg.assistant').innerText")
        assert " ".join(shown.split()) == " ".join(want.outputs[0].text.split())
        assert browser.js("document.querySelector('.msg.user').textContent") == \
            "the quick brown fox"
        assert browser.js("window.__updates") >= 3  # the answer arrived in pieces
