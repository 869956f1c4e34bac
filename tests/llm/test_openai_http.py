"""OpenAILLM against a tiny scripted HTTP server on 127.0.0.1: retries on 429/503 and dropped
connections, one clear error for anything else, and scoring on servers that refuse
max_tokens=0."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fullchain.config import LLMError
from fullchain.llm import GenParams, OpenAILLM, continuation_start

CHAT_OK = {"choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "hello"}}],
           "usage": {"prompt_tokens": 5, "completion_tokens": 1}}


@pytest.fixture
def fake():
    """A server answering from a script: each entry is (status, JSON body, headers); once the
    script runs out it repeats the last entry. Yields (api root, script, requests seen)."""
    script: list[tuple[int, object, dict]] = []
    seen: list[tuple[str, str, dict | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body):
            seen.append((self.command, self.path, body))
            status, payload, headers = script[min(len(seen), len(script)) - 1]
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802 - http.server's name
            self._answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        def do_GET(self):  # noqa: N802
            self._answer(None)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1", script, seen
    httpd.shutdown()
    httpd.server_close()


def llm(url: str, **kw) -> OpenAILLM:
    return OpenAILLM(url, model="m", api_key="k", backoff_s=0.001, **kw)


def test_429_then_success_is_retried(fake):
    url, script, seen = fake
    script += [(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
               (503, {"error": {"message": "overloaded"}}, {}), (200, CHAT_OK, {})]
    r = llm(url).chat([{"role": "user", "content": "hi"}], params=GenParams(seed=3, stop="x"))
    assert r.text == "hello" and r.finish_reason == "stop" and r.usage.prompt_tokens == 5
    assert len(seen) == 3 and seen[0][1] == "/v1/chat/completions"
    body = seen[0][2]
    assert body["model"] == "m" and body["seed"] == 3 and body["stop"] == ["x"]
    assert body["temperature"] == 0 and body["messages"][0]["content"] == "hi"


def test_retries_are_bounded_and_the_error_names_the_status(fake):
    url, script, seen = fake
    script.append((503, {"error": {"message": "overloaded"}}, {}))
    with pytest.raises(LLMError) as e:
        llm(url, max_retries=2).chat([{"role": "user", "content": "hi"}])
    assert len(seen) == 3
    assert str(e.value).startswith(f"{url}/chat/completions: HTTP 503 (after 3 tries)")
    assert "overloaded" in str(e.value) and e.value.status == 503


@pytest.mark.parametrize("status", [400, 500])
def test_other_failures_are_one_clear_error_without_retry(fake, status):
    url, script, seen = fake
    script.append((status, {"error": {"message": "prompt is empty", "code": status}}, {}))
    with pytest.raises(LLMError) as e:
        llm(url).complete(["x"])
    assert len(seen) == 1
    assert str(e.value) == f"{url}/completions: HTTP {status}: prompt is empty"


def test_404_hints_at_the_base_url_and_bad_json_names_the_url(fake):
    url, script, _ = fake
    script.append((404, "<html>Not Found</html>", {"Content-Type": "text/html"}))
    with pytest.raises(LLMError, match=r"HTTP 404: <html>Not Found</html>; check the base URL"):
        llm(url).chat([{"role": "user", "content": "hi"}])
    script[:] = [(200, {"choices": []}, {})]
    with pytest.raises(LLMError, match=f"{url}/chat/completions: unexpected answer"):
        llm(url).chat([{"role": "user", "content": "hi"}])


def test_a_refused_connection_is_retried_then_named():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket closes
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(LLMError, match=rf"{url}/completions: ConnectError.*after 2 tries"):
        llm(url, max_retries=1).complete(["x"])


def test_the_model_defaults_to_the_servers_first(fake):
    url, script, seen = fake
    script.append((200, {"object": "list", "data": [{"id": "served"}, {"id": "other"}]}, {}))
    assert OpenAILLM(url).model == "served" and seen[0][:2] == ("GET", "/v1/models")


def echo(tokens: list[str], lps: list, generated: str = "") -> dict:
    """A /completions answer echoing `tokens` (+ one generated token)."""
    toks = tokens + ([generated] if generated else [])
    offsets = [sum(map(len, toks[:i])) for i in range(len(toks))]
    return {"choices": [{"index": 0, "text": "".join(toks), "finish_reason": "length",
                         "logprobs": {"tokens": toks, "token_logprobs": lps,
                                      "top_logprobs": [None] + [{t: -0.1} for t in toks[1:]],
                                      "text_offset": offsets}}],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": len(toks) - len(tokens)}}


def test_score_falls_back_to_max_tokens_1_and_sums_the_continuation(fake):
    url, script, seen = fake
    script += [(400, {"error": {"message": "max_tokens must be at least 1"}}, {}),
               (200, echo(["The", " cap", "ital", " is", " Par", "is"],
                          [None, -1.0, -0.5, -0.25, -2.0, -0.1, -3.0], generated="."), {}),
               (200, echo(["The", " cap"], [None, -0.1]), {})]
    m = llm(url, concurrency=1)
    first = m.score([("The capital is", " Paris")])
    assert first == [(pytest.approx(-2.1), False)]  # " Par" is not the top token
    assert [b["max_tokens"] for _, _, b in seen] == [0, 1]
    assert seen[1][2]["echo"] is True and seen[1][2]["logprobs"] == 1
    assert seen[1][2]["prompt"] == "The capital is Paris"
    assert m.score([("The ca", "p")]) == [(pytest.approx(-0.1), True)]  # a straddling token
    assert seen[2][2]["max_tokens"] == 1


def test_continuation_start_counts_from_the_end_of_the_echo():
    # a BOS written out in front does not shift the boundary
    assert continuation_start([0, 3, 6, 10], "<s>The cap ital", "The cap", " ital") == 3
    assert continuation_start([0, 3, 7], "The capital", "The ca", "pital") == 1
    assert continuation_start([0, 3], "The cap", "The", " cap") == 1
