"""`OpenAILLM`: the LLM protocol over any OpenAI-compatible HTTP server (fullchain serve, vLLM,
LMDeploy, llama.cpp server, a hosted API), with httpx.

`score` asks `/completions` to echo the prompt with log-probs (`echo=True, logprobs=1`) and
`max_tokens=0`, or 1 where a server refuses 0 (vLLM); the continuation is found by the echoed
text offsets (see `continuation_start`), as lm-evaluation-harness's `local-completions` scores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fullchain.config import LLMError
from fullchain.llm.base import (
    ChatResult,
    Completion,
    GenParams,
    Message,
    Score,
    Usage,
    continuation_start,
)
from fullchain.tokenizer.tool_calls import ToolCall

RETRY_STATUSES = (429, 503)  # busy or overloaded: worth another try after a pause
_HINTS = {401: "; check the API key", 403: "; check the API key",
          404: "; check the base URL (it usually ends in /v1) and the model name"}


class OpenAILLM:
    """The LLM protocol over `base_url` (the API root, e.g. ``http://127.0.0.1:8000/v1``).

    `model` None takes the first model the server lists. 429/503 answers and connection errors
    are retried up to `max_retries` times, waiting `backoff_s` doubled each time (or the
    server's Retry-After), at most `max_backoff_s`; any other failure raises LLMError naming
    the URL, the status and the server's message. Several prompts or pairs go out as
    `concurrency` parallel requests (the server batches them)."""

    def __init__(self, base_url: str, *, model: str | None = None, api_key: str = "",
                 timeout_s: float = 120.0, max_retries: int = 4, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, concurrency: int = 8) -> None:
        import httpx
        self.base_url = base_url.rstrip("/")
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.concurrency = max(1, concurrency)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout_s)
        self._score_max_tokens = 0  # becomes 1 once the server refuses 0
        self.model = model or self._first_model()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAILLM:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ the protocol

    def chat(self, messages: Sequence[Message], *, tools: Sequence[Mapping] | None = None,
             params: GenParams | None = None) -> ChatResult:
        body: dict[str, Any] = {"messages": [dict(m) for m in messages],
                                **self._sampling(params or GenParams())}
        if tools:
            body["tools"] = [dict(t) for t in tools]
        data = self._post("/chat/completions", body)
        with self._reading("/chat/completions", data):
            choice = data["choices"][0]
            message = choice["message"]
            calls = [_tool_call(c) for c in message.get("tool_calls") or []]
            return ChatResult(text=message.get("content") or "", tool_calls=calls,
                              finish_reason=choice.get("finish_reason"), usage=_usage(data))

    def complete(self, prompts: Sequence[str], params: GenParams | None = None,
                 ) -> list[Completion]:
        params = params or GenParams()
        return self._map(lambda prompt: self._complete_one(prompt, params), prompts)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Score]:
        for context, continuation in pairs:
            if not continuation:
                raise LLMError(f"{self.base_url}: score needs a non-empty continuation "
                               f"(context {context[:40]!r})")
        return self._map(lambda pair: self._score_one(*pair), pairs)

    # ------------------------------------------------------------------ requests

    def _sampling(self, params: GenParams) -> dict[str, Any]:
        body = {"model": self.model, "max_tokens": params.max_tokens,
                "temperature": params.temperature, "top_p": params.top_p}
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def _complete_one(self, prompt: str, params: GenParams) -> Completion:
        body = {"prompt": prompt, **self._sampling(params)}
        if params.logprobs:
            body["logprobs"] = 1
        data = self._post("/completions", body)
        with self._reading("/completions", data):
            choice = data["choices"][0]
            usage = _usage(data)
            lps = (choice.get("logprobs") or {}).get("token_logprobs") if params.logprobs else None
            return Completion(text=choice["text"], finish_reason=choice.get("finish_reason"),
                              prompt_tokens=usage.prompt_tokens,
                              completion_tokens=usage.completion_tokens,
                              logprobs=None if lps is None else [float(v) for v in lps])

    def _score_one(self, context: str, continuation: str) -> Score:
        body = {"model": self.model, "prompt": context + continuation, "echo": True,
                "logprobs": 1, "temperature": 0, "max_tokens": self._score_max_tokens}
        try:
            data = self._post("/completions", body)
        except LLMError as e:
            if e.status != 400 or self._score_max_tokens != 0:
                raise
            self._score_max_tokens = body["max_tokens"] = 1  # e.g. vLLM: max_tokens must be >= 1
            data = self._post("/completions", body)
        with self._reading("/completions", data):
            return _echo_score(data, context, continuation, generated=body["max_tokens"],
                               where=f"{self.base_url}/completions")

    def _first_model(self) -> str:
        data = self._send("GET", "/models", None)
        with self._reading("/models", data):
            return data["data"][0]["id"]

    def _map(self, fn: Callable, items: Sequence) -> list:
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", path, body)

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """One request, retried on 429/503 and connection errors; the answer's JSON."""
        import httpx
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                resp = self._client.request(method, url, json=body)
            except httpx.TransportError as e:
                if last:
                    raise LLMError(f"{url}: {type(e).__name__}: {e or 'no answer'} (after "
                                   f"{attempt + 1} tries); is the server running at that "
                                   "address?") from None
                self._pause(attempt, None)
                continue
            if resp.status_code in RETRY_STATUSES and not last:
                self._pause(attempt, resp.headers.get("retry-after"))
                continue
            return _answer(url, resp, tries=attempt + 1)
        raise AssertionError("unreachable: the last try returns or raises")

    def _pause(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff_s * 2**attempt
        try:
            delay = max(delay, float(retry_after)) if retry_after else delay
        except ValueError:  # an HTTP date: keep our own backoff
            pass
        time.sleep(min(delay, self.max_backoff_s))

    def _reading(self, path: str, data: Any) -> _Reading:
        return _Reading(f"{self.base_url}{path}", data)


class _Reading:
    """Turns a missing or mistyped field of an answer into an LLMError naming the URL."""

    def __init__(self, url: str, data: Any) -> None:
        self.url, self.data = url, data

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        if kind is not None and issubclass(kind, (KeyError, IndexError, TypeError, ValueError)):
            shown = json.dumps(self.data)[:300]
            raise LLMError(f"{self.url}: unexpected answer ({kind.__name__}: {error}): "
                           f"{shown}; is this an OpenAI-compatible endpoint?") from None
        return False


def _answer(url: str, resp: Any, *, tries: int) -> Any:
    if resp.status_code >= 400:
        tried = f" (after {tries} tries)" if tries > 1 else ""
        raise LLMError(f"{url}: HTTP {resp.status_code}{tried}: {_server_message(resp)}"
                       f"{_HINTS.get(resp.status_code, '')}", status=resp.status_code)
    try:
        return resp.json()
    except ValueError:
        raise LLMError(f"{url}: the answer is not JSON: {resp.text[:200]!r}; is this an "
                       "OpenAI-compatible endpoint?", status=resp.status_code) from None


def _server_message(resp: Any) -> str:
    """The message of an OpenAI-shaped error body ({"error": {"message"}}), FastAPI's
    {"detail"}, or the start of the raw text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:300] or resp.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error:
            return str(error)[:500]
    return json.dumps(body)[:300]


def _usage(data: dict[str, Any]) -> Usage:
    usage = data.get("usage") or {}
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _tool_call(call: dict[str, Any]) -> ToolCall:
    fn = call["function"]
    args = fn.get("arguments") or "{}"
    args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return ToolCall(fn["name"], args, **({"id": call["id"]} if call.get("id") else {}))


def _echo_score(data: dict[str, Any], context: str, continuation: str, *, generated: int,
                where: str) -> Score:
    """The continuation's log-prob sum and greediness from an echoed `/completions` answer.
    The prompt's tokens are `usage.prompt_tokens` when given, else all but `generated`."""
    choice = data["choices"][0]
    lp = choice["logprobs"]
    token_lps, tops, offsets = lp["token_logprobs"], lp["top_logprobs"], lp["text_offset"]
    n = int((data.get("usage") or {}).get("prompt_tokens") or len(token_lps) - generated)
    text = choice["text"][:offsets[n]] if n < len(offsets) else choice["text"]
    start = continuation_start(offsets[:n], text, context, continuation)
    if start == 0 or start >= n or token_lps[start] is None:
        raise LLMError(f"{where}: cannot find the continuation {continuation!r} in the echoed "
                       f"prompt ({n} tokens, continuation from token {start}); give a "
                       "non-empty context")
    chosen = [float(v) for v in token_lps[start:n]]
    greedy = all(not top or v >= max(top.values()) - 1e-6 for v, top in zip(chosen, tops[start:n]))
    return sum(chosen), greedy
