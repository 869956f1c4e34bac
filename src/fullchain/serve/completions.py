"""POST /v1/completions: prompts (text or token ids) -> engine -> choices, with `echo` and
prompt-aligned log-probs so that lm-evaluation-harness `local-completions` can score with it
(CONVENTIONS.md 4.4, 4.6): with echo + logprobs the arrays cover the prompt tokens (the first
one null) and then the generated ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import Request

from fullchain.serve.common import new_id, now, sse_response, start, token_text, usage
from fullchain.serve.schema import APIError, CompletionRequest


def _prompts(state, body: CompletionRequest) -> list[list[int]]:
    p = body.prompt
    if isinstance(p, str):
        p = [p]
    if not p:
        raise APIError(400, "prompt is empty", "prompt")
    if all(isinstance(x, int) for x in p):
        p = [p]
    out = []
    for x in p:
        if isinstance(x, str):
            out.append(state.tokenizer.encode(x, add_special_tokens=body.add_special_tokens))
        else:
            out.append(list(x))  # token ids are used as they are: never add BOS to them
    if any(not ids for ids in out):
        raise APIError(400, "a prompt is empty: give at least one token", "prompt")
    return out


def _logprobs_block(state, ids: list[int], entries: list, k: int, offset: int) -> dict:
    tokens = [token_text(state.tokenizer, t) for t in ids]
    offsets, pos = [], offset
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    return {"tokens": tokens,
            "token_logprobs": [None if e is None else e[0] for e in entries],
            "top_logprobs": [None if e is None else
                             {token_text(state.tokenizer, i): v for i, v in e[1][:max(k, 1)]}
                             for e in entries],
            "text_offset": offsets}


async def _one(state, body: CompletionRequest, ids: list[int], params) -> list[dict]:
    """The n choices of one prompt (non-streaming)."""
    outputs = await start(state.engine, ids, params)
    got = {i: {"text": "", "ids": [], "lps": [], "reason": None, "prompt": None}
           for i in range(body.n)}
    async for out in outputs:
        g = got[out.index]
        if out.prompt_logprobs is not None:
            g["prompt"] = out.prompt_logprobs
        g["text"] += out.text
        g["ids"] += out.token_ids
        g["lps"] += out.logprobs
        if out.finished:
            g["reason"] = out.finish_reason
    return [got[i] for i in range(body.n)]


def _params(state, body: CompletionRequest, ids: list[int]):
    if body.suffix:
        raise APIError(400, "suffix (fill-in-the-middle) is not supported", "suffix")
    max_tokens = body.max_tokens if body.max_tokens is not None else 16
    state.check_prompt(ids, max_tokens)
    max_tokens = min(max_tokens, state.max_model_len - len(ids))
    want_prompt = body.echo and body.logprobs is not None
    return body.sampling(max_tokens=max_tokens, logprobs=body.logprobs,
                         prompt_logprobs=body.logprobs if want_prompt else None)


async def completions(state, body: CompletionRequest, request: Request):
    state.check_model(body.model)
    prompts = _prompts(state, body)
    params = [_params(state, body, ids) for ids in prompts]
    rid, created = new_id("cmpl"), now()
    if body.stream:
        if body.echo:
            raise APIError(400, "streaming does not support echo; use stream=false", "echo")
        streams = await _start_all(state, prompts, params)
        return sse_response(_stream(state, body, rid, created, sum(map(len, prompts)),
                                    _merge(streams)))
    results = await asyncio.gather(*(_one(state, body, ids, p) for ids, p in
                                     zip(prompts, params)))
    choices, completion_tokens = [], 0
    for ids, choice_list in zip(prompts, results):
        prompt_text = state.tokenizer.decode(ids) if body.echo else ""
        for g in choice_list:
            completion_tokens += len(g["ids"])
            lps = None
            if body.logprobs is not None:
                all_ids = (ids if body.echo else []) + g["ids"]
                entries = (g["prompt"] if body.echo else []) + g["lps"]
                lps = _logprobs_block(state, all_ids, entries, body.logprobs, 0)
            choices.append({"index": len(choices), "text": prompt_text + g["text"],
                            "logprobs": lps, "finish_reason": g["reason"]})
    return {"id": rid, "object": "text_completion", "created": created,
            "model": state.model_name, "choices": choices,
            "usage": usage(sum(map(len, prompts)), completion_tokens)}


async def _start_all(state, prompts: list[list[int]], params: list) -> list[AsyncIterator]:
    """Start every prompt (each one's first output awaited, so a rejected prompt is an HTTP
    error); on an error the ones already started are aborted."""
    started = []
    try:
        for ids, p in zip(prompts, params):
            started.append(await start(state.engine, ids, p))
    except BaseException:
        for outputs in started:  # enter each (its first output is there) so closing aborts it
            await anext(outputs, None)
            await outputs.aclose()
        raise
    return started


async def _merge(streams: list[AsyncIterator]) -> AsyncIterator[tuple[int, object]]:
    """(prompt number, output) from several streams, as they come."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(k: int, outputs: AsyncIterator) -> None:
        try:
            async for out in outputs:
                await queue.put((k, out))
        except Exception as e:
            await queue.put((k, e))
        finally:
            await queue.put((k, None))

    tasks = [asyncio.create_task(pump(k, s)) for k, s in enumerate(streams)]
    try:
        left = len(tasks)
        while left:
            k, item = await queue.get()
            if item is None:
                left -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield k, item
    finally:  # done, failed or the client went away: stop (and abort) the rest
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _stream(state, body, rid, created, prompt_tokens, outputs) -> AsyncIterator[dict]:
    """Chunks of all choices; choice index = prompt number * n + the prompt's choice index."""
    completion_tokens = 0
    async for k, out in outputs:
        completion_tokens += len(out.token_ids)
        lps = None
        if body.logprobs is not None and out.token_ids:
            lps = _logprobs_block(state, out.token_ids, out.logprobs, body.logprobs, 0)
        if out.text or out.finished or lps:
            yield {"id": rid, "object": "text_completion", "created": created,
                   "model": state.model_name,
                   "choices": [{"index": k * body.n + out.index, "text": out.text,
                                "logprobs": lps, "finish_reason": out.finish_reason}]}
    if body.include_usage:
        yield {"id": rid, "object": "text_completion", "created": created,
               "model": state.model_name, "choices": [],
               "usage": usage(prompt_tokens, completion_tokens)}
