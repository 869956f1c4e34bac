"""`LocalLLM`: the LLM protocol over an in-process `fullchain.engine.Engine`.

It prepares requests exactly as `fullchain serve` does (the chat template with tools, BOS on raw
prompts, the server's token budget and special-token handling), so greedy replies and scores
equal those of the same model behind the server.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fullchain.config import ConfigError, LLMError
from fullchain.engine import CompletionOutput, Engine, EngineConfig, SamplingParams
from fullchain.llm.base import (
    ChatResult,
    Completion,
    GenParams,
    Message,
    Score,
    Usage,
    continuation_start,
)
from fullchain.tokenizer.tool_calls import PARSERS, parser_for_template


class LocalLLM:
    """The LLM protocol on an engine that this object drives alone (one caller at a time).

    `tool_parser` (internlm2 | hermes | llama3) None picks the format of the chat template;
    tool calls are parsed only when `chat` is given tools, as the server does."""

    def __init__(self, engine: Engine, *, model: str = "local",
                 tool_parser: str | None = None) -> None:
        if engine.tokenizer is None:
            raise LLMError(f"{model}: LocalLLM needs an engine with a tokenizer")
        if tool_parser is not None and tool_parser not in PARSERS:
            raise ConfigError(f"unknown tool parser {tool_parser!r}; use one of {list(PARSERS)}")
        self.engine, self.tokenizer, self.model = engine, engine.tokenizer, model
        self.tool_parser = (PARSERS[tool_parser]() if tool_parser
                            else parser_for_template(self.tokenizer.chat_template))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, config: EngineConfig | None = None, *,
                        dtype: str = "float32", device: str = "cpu",
                        model: str | None = None) -> LocalLLM:
        """An engine over a model folder; `model` (the name results report) defaults to the
        folder's name."""
        engine = Engine.from_pretrained(path, config, dtype=dtype, device=device)
        return cls(engine, model=model or Path(path).name)

    # ------------------------------------------------------------------ the protocol

    def chat(self, messages: Sequence[Message], *, tools: Sequence[Mapping] | None = None,
             params: GenParams | None = None) -> ChatResult:
        params = params or GenParams()
        tools = list(tools) if tools else None
        ids = self.tokenizer.apply_chat_template(_text_messages(messages), tools=tools,
                                                 add_generation_prompt=True, tokenize=True)
        parser = self.tool_parser if tools else None
        # a parser needs the special tokens that delimit calls, so they stay in the text
        out = self._run([(ids, self._sampling(params, ids, skip_special=parser is None))])[0]
        content, calls = parser.parse(out.text) if parser else (out.text, [])
        return ChatResult(text=content or "", tool_calls=calls,
                          finish_reason="tool_calls" if calls else out.finish_reason,
                          usage=Usage(len(ids), len(out.token_ids)))

    def complete(self, prompts: Sequence[str], params: GenParams | None = None,
                 ) -> list[Completion]:
        params = params or GenParams()
        encoded = [self.tokenizer.encode(p, add_special_tokens=True) for p in prompts]
        if any(not ids for ids in encoded):
            raise LLMError(f"{self.model}: a prompt is empty; give at least one token")
        outs = self._run([(ids, self._sampling(params, ids)) for ids in encoded])
        return [Completion(text=o.text, finish_reason=o.finish_reason, prompt_tokens=len(ids),
                           completion_tokens=len(o.token_ids),
                           logprobs=[lp for lp, _ in o.logprobs] if params.logprobs else None)
                for ids, o in zip(encoded, outs)]

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Score]:
        split = [self._split(context, continuation) for context, continuation in pairs]
        return [(float(lp), bool(greedy)) for lp, greedy in self.engine.score(split)]

    # ------------------------------------------------------------------ helpers

    def _sampling(self, params: GenParams, ids: list[int], *,
                  skip_special: bool = True) -> SamplingParams:
        room = self.engine.max_model_len - len(ids)
        if room <= 0:
            raise LLMError(f"{self.model}: the prompt has {len(ids)} tokens but the context "
                           f"is {self.engine.max_model_len}; shorten it")
        return SamplingParams(max_tokens=min(params.max_tokens, room),
                              temperature=params.temperature, top_p=params.top_p,
                              stop=params.stop, seed=params.seed,
                              logprobs=0 if params.logprobs else None,
                              skip_special_tokens=skip_special)

    def _run(self, requests: list[tuple[list[int], SamplingParams]]) -> list[CompletionOutput]:
        """Run requests with their own parameters to completion, batched, in input order."""
        rids: list[str] = []
        outs: dict[str, CompletionOutput] = {}
        try:
            for ids, params in requests:
                rids.append(self.engine.add_request(ids, params))
                outs[rids[-1]] = CompletionOutput(0, [], "", [], None)
            while any(o.finish_reason is None for o in outs.values()) and self.engine.has_work():
                for step in self.engine.step():
                    if (o := outs.get(step.request_id)) is not None:
                        o.token_ids += step.token_ids
                        o.text += step.text
                        o.logprobs += step.logprobs
                        o.finish_reason = step.finish_reason if step.finished else None
        finally:
            for rid in rids:
                if outs[rid].finish_reason is None:
                    self.engine.abort(rid)
        return [outs[rid] for rid in rids]

    def _split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Tokenize context + continuation whole and cut where the server's echo would."""
        if not continuation:
            raise LLMError(f"{self.model}: score needs a non-empty continuation")
        ids = self.tokenizer.encode(context + continuation, add_special_tokens=True)
        pieces = [self.tokenizer.decode([t]) for t in ids]
        offsets = list(itertools.accumulate((len(p) for p in pieces[:-1]), initial=0))
        start = continuation_start(offsets, self.tokenizer.decode(ids), context, continuation)
        if start == 0:
            raise LLMError(f"{self.model}: the continuation {continuation!r} starts at the first "
                           "token, which has no log-prob; give a non-empty context")
        return ids[:start], ids[start:]


def _text_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """As the server reads them: list contents joined from their text parts, None as ""."""
    out = []
    for m in messages:
        m = dict(m)
        content = m.get("content")
        if isinstance(content, list):
            m["content"] = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        elif content is None:
            m["content"] = ""
        out.append(m)
    return out
