"""POST /v1/chat/completions: messages -> chat template -> engine -> (streamed) choices, with
tool calls parsed out of the reply in the format of the model's template."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from fullchain.engine import StepOutput
from fullchain.serve.common import new_id, now, sse_response, start, token_text, usage
from fullchain.serve.guided import GuidedProcessor, response_format_state, tool_choice_state
from fullchain.serve.schema import APIError, ChatRequest
from fullchain.tokenizer.tool_calls import StreamingToolParser


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Text parts of list contents joined; content None allowed for tool-calling turns."""
    out = []
    for i, m in enumerate(messages):
        if "role" not in m:
            raise APIError(400, f"messages[{i}] has no 'role'", f"messages[{i}].role")
        m = dict(m)
        content = m.get("content")
        if isinstance(content, list):
            if any(p.get("type") != "text" for p in content if isinstance(p, dict)):
                raise APIError(400, "only text content parts are supported (no images)",
                               f"messages[{i}].content")
            m["content"] = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        elif content is None:
            m["content"] = ""
        out.append(m)
    return out


def _prepare(state, body: ChatRequest):
    state.check_model(body.model)
    # a forced tool call (tool_choice "required" or named) takes precedence over response_format
    grammar = tool_choice_state(body.tool_choice, body.tools, state.tool_parser)
    if grammar is None:
        grammar = response_format_state(body.response_format)
    if body.top_logprobs and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", "top_logprobs")
    tools = body.tools if body.tools and body.tool_choice != "none" else None
    try:
        ids = state.tokenizer.apply_chat_template(
            _messages(body.messages), tools=tools, tokenize=True,
            add_generation_prompt=body.add_generation_prompt,
            **(body.chat_template_kwargs or {}))
    except APIError:
        raise
    except Exception as e:  # template errors (raise_exception, bad roles) are the client's
        raise APIError(400, f"could not render the messages with the chat template: {e}",
                       "messages") from None
    requested = body.max_completion_tokens or body.max_tokens
    state.check_prompt(ids, requested or 1)
    room = state.max_model_len - len(ids)
    parser = state.tool_parser if tools else None
    params = body.sampling(max_tokens=min(requested or room, room),
                           logprobs=(body.top_logprobs or 0) if body.logprobs else None,
                           skip_special=False if parser else None)
    if grammar is not None:
        stops = set() if params.ignore_eos else set(state.tokenizer.stop_token_ids)
        params.logits_processor = GuidedProcessor(
            state.tokenizer, grammar, max_tokens=params.max_tokens,
            stop_ids=stops | set(params.stop_token_ids),
            skip_special_tokens=params.skip_special_tokens, greedy=params.greedy)
    return ids, params, parser


async def chat_completions(state, body: ChatRequest, request: Request):
    ids, params, parser = _prepare(state, body)
    outputs = await start(state.engine, ids, params)
    rid, created = new_id("chatcmpl"), now()
    if body.stream:
        return sse_response(_stream(state, body, rid, created, len(ids), outputs, parser))
    texts = {i: "" for i in range(body.n)}
    tokens = {i: 0 for i in range(body.n)}
    logprobs: dict[int, list] = {i: [] for i in range(body.n)}
    reasons: dict[int, str | None] = {}
    async for out in outputs:
        texts[out.index] += out.text
        tokens[out.index] += len(out.token_ids)
        logprobs[out.index] += _logprob_entries(state, out)
        if out.finished:
            reasons[out.index] = out.finish_reason
    choices = []
    for i in range(body.n):
        message: dict[str, Any] = {"role": "assistant", "content": texts[i]}
        reason = reasons.get(i)
        if parser is not None:
            content, calls = parser.parse(texts[i])
            if calls:
                message = {"role": "assistant", "content": content,
                           "tool_calls": [c.to_openai() for c in calls]}
                reason = "tool_calls"
        choices.append({"index": i, "message": message, "finish_reason": reason,
                        "logprobs": {"content": logprobs[i]} if body.logprobs else None})
    return {"id": rid, "object": "chat.completion", "created": created,
            "model": state.model_name, "choices": choices,
            "usage": usage(len(ids), sum(tokens.values()))}


def _logprob_entries(state, out: StepOutput) -> list[dict]:
    entries = []
    for token_id, (lp, top) in zip(out.token_ids, out.logprobs):
        text = token_text(state.tokenizer, token_id)
        entries.append({"token": text, "logprob": lp, "bytes": list(text.encode()),
                        "top_logprobs": [
                            {"token": (t := token_text(state.tokenizer, i)), "logprob": v,
                             "bytes": list(t.encode())} for i, v in top]})
    return entries


async def _stream(state, body: ChatRequest, rid: str, created: int, prompt_tokens: int,
                  outputs: AsyncIterator[StepOutput], parser) -> AsyncIterator[dict]:
    def chunk(index: int, delta: dict, reason: str | None = None, lps=None) -> dict:
        choice = {"index": index, "delta": delta, "finish_reason": reason, "logprobs": lps}
        return {"id": rid, "object": "chat.completion.chunk", "created": created,
                "model": state.model_name, "choices": [choice]}

    tool_streams = {i: StreamingToolParser(parser) for i in range(body.n)} if parser else {}
    for i in range(body.n):
        yield chunk(i, {"role": "assistant", "content": ""})
    completion_tokens = 0
    async for out in outputs:
        completion_tokens += len(out.token_ids)
        lps = {"content": _logprob_entries(state, out)} if body.logprobs else None
        events = tool_streams[out.index].push(out.text) if parser else (
            [("content", out.text)] if out.text else [])
        if out.finished and parser:
            events += tool_streams[out.index].finish()
        for event in events:
            yield chunk(out.index, *_delta(event))
        if lps and not events:
            yield chunk(out.index, {"content": ""}, None, lps)
        if out.finished:
            calls = parser is not None and tool_streams[out.index].num_calls > 0
            yield chunk(out.index, {}, "tool_calls" if calls else out.finish_reason)
    if body.include_usage:
        yield {"id": rid, "object": "chat.completion.chunk", "created": created,
               "model": state.model_name, "choices": [],
               "usage": usage(prompt_tokens, completion_tokens)}


def _delta(event: tuple) -> tuple[dict]:
    if event[0] == "content":
        return ({"content": event[1]},)
    _, index, call = event
    return ({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                             "function": {"name": call.name, "arguments": call.arguments}}]},)
