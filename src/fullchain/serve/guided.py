"""Guided decoding: a `SamplingParams.logits_processor` that keeps a reply inside a grammar
(`serve.json_mode`), and the grammars of the chat endpoint: `response_format` json_object and
json_schema, and `tool_choice` "required" or a named function (the model's tool-call format with
the arguments constrained by the function's `parameters` schema).

Each step it checks the likeliest tokens in order (64, then further down the ranking when none
of those fits) and lets through the ones whose text keeps the reply a valid prefix and still
leaves room to finish it within max_tokens; when none does, it forces the next token of the
shortest completion. A complete match allows only the stop tokens.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Sequence

import torch

from fullchain.serve.json_mode import (
    FREE_OBJECT,
    State,
    accepts_non_ascii,
    advance,
    closing,
    in_fixed_text,
    is_complete,
    start_state,
    value_state,
)
from fullchain.serve.json_schema import SchemaError, compile_schema
from fullchain.serve.schema import APIError

log = logging.getLogger(__name__)
CANDIDATES = 64  # checked first; then further down the ranking, SCAN at a time
SCAN = 1024
MAX_SCANNED = 8192
WINDOW = 8  # tokens of context decoded with a candidate (a multi-byte character spans <= 4)
CACHE = 256  # (ids -> state) entries kept per request
PENDING = "\ufffd"

# (text before the name, between the name and the arguments, after the arguments) of one call
TOOL_CALL_FORMATS = {
    "hermes": ('<tool_call>\n{"name": ', ', "arguments": ', "}\n</tool_call>"),
    "internlm2": ('<|action_start|><|plugin|>\n{"name": ', ', "parameters": ', "}<|action_end|>"),
    "llama3": ('{"name": ', ', "parameters": ', "}"),
}


class GuidedProcessor:
    """Masks the logits of each step to the tokens that keep `output_ids` a prefix of the
    grammar (`start`) and finishable within `max_tokens`. Shared by the n sequences of a
    request: its cache is keyed by their output ids."""

    def __init__(self, tokenizer, start: State, *, max_tokens: int, stop_ids: Sequence[int],
                 skip_special_tokens: bool = True, greedy: bool = False) -> None:
        self.tokenizer, self.start, self.max_tokens = tokenizer, start, max_tokens
        self.stops = sorted({int(t) for t in stop_ids})
        self.skip_special, self.greedy = skip_special_tokens, greedy
        self.cache: dict[tuple, tuple[str, State]] = {}
        self.costs: dict[str, int] = {}  # closing text -> tokens to write it

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        try:
            allowed = self._allowed(output_ids, logits)
        except Exception:  # a bug here must not fail the whole batch: end this reply
            log.exception("guided decoding failed; ending the reply")
            allowed = self.stops
        if not allowed:
            return logits  # no stop token to end with (ignore_eos): leave the reply alone
        mask = torch.full_like(logits, float("-inf"))
        mask[torch.tensor(allowed, dtype=torch.long)] = 0.0
        masked = logits + mask
        # the allowed ones may all be -inf already (min_tokens holding back the stop tokens):
        # the grammar wins, so that the sampler always has a token to draw
        return masked if torch.isfinite(masked).any() else mask

    def _allowed(self, output_ids: list[int], logits: torch.Tensor) -> list[int]:
        state = self._state(output_ids)
        if not state or is_complete(state):
            return self.stops  # done (or lost: a broken byte sequence): end the reply
        room = self.max_tokens - len(output_ids)  # tokens left, this one included
        allowed = self._likely(output_ids, state, logits, room)
        if not allowed:
            forced = self._forced(output_ids, state)
            allowed = [forced] if forced is not None else self.stops
        return allowed

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special)

    def _state(self, output_ids: list[int]) -> State:
        """The state after the settled text of the reply (no partial character at its end)."""
        key = tuple(output_ids)
        if key in self.cache:
            return self.cache[key][1]
        text = self._decode(output_ids).rstrip(PENDING)
        parent = self.cache.pop(key[:-1], None) if key else None
        if parent is not None and text.startswith(parent[0]):
            state = advance(parent[1], text[len(parent[0]):])
        else:
            state = advance(self.start, text)
        if len(self.cache) >= CACHE:
            self.cache.pop(next(iter(self.cache)))
        self.cache[key] = (text, state)
        return state

    def _text_of(self, output_ids: list[int], token: int) -> tuple[str, bool] | None:
        """(the settled text `token` adds, whether it leaves a partial character at the end),
        or None when it adds nothing (a skipped special token)."""
        window = output_ids[-WINDOW:]
        before, new = self._decode(window), self._decode(window + [token])
        if not new.startswith(before.rstrip(PENDING)):  # the window cut a character
            before, new = self._decode(output_ids), self._decode(output_ids + [token])
        base, settled = before.rstrip(PENDING), new.rstrip(PENDING)
        if new == before or not settled.startswith(base):
            return None
        return settled[len(base):], settled != new

    def _after(self, output_ids: list[int], state: State, token: int) -> State | None:
        """The state after `token`, or None when it adds no text or breaks the grammar. Special
        tokens (written out only in tool-call mode) may only spell the format's fixed text."""
        if not self.skip_special and self._special(token) and not in_fixed_text(state):
            return None
        got = self._text_of(output_ids, token)
        if got is None:
            return None
        after = advance(state, got[0])
        if not after or (got[1] and not accepts_non_ascii(after)):
            return None
        return after

    def _likely(self, output_ids: list[int], state: State, logits: torch.Tensor,
                room: int) -> list[int]:
        """The valid tokens among the likeliest: the first CANDIDATES, then SCAN at a time."""
        finite = int(torch.isfinite(logits).sum())
        order = torch.topk(logits, min(CANDIDATES, finite)).indices
        allowed, begin, end = [], 0, min(CANDIDATES, finite)
        while begin < end and not allowed:
            if end > len(order):
                order = torch.argsort(logits, descending=True)
            for t in order[begin:end].tolist():
                if t in self.stops:
                    continue
                after = self._after(output_ids, state, t)
                if after is not None and self._fits(after, room):
                    allowed.append(t)
                    if self.greedy:
                        return allowed
            begin, end = end, min(end + SCAN, finite, MAX_SCANNED)
        return allowed

    def _fits(self, after: State, room: int) -> bool:
        """Whether the closing of `after` plus the stop token fit in the tokens left after this
        one: surely when it has few characters, else counted as the forced path writes it."""
        rest = closing(after)
        return len(rest) + 2 <= room or self._cost(rest) + 2 <= room

    def _cost(self, text: str) -> int:
        """Tokens of `text` taken longest-first from the vocabulary (the forced path)."""
        if text not in self.costs:
            pieces, longest = self._vocab()
            count, i = 0, 0
            while i < len(text):
                k = next((k for k in range(min(longest, len(text) - i), 0, -1)
                          if text[i:i + k] in pieces), 0)
                if k == 0:
                    return len(text) + 1  # a character no token writes: never fits
                count, i = count + 1, i + k
            if len(self.costs) > CACHE:
                self.costs.clear()
            self.costs[text] = count
        return self.costs[text]

    def _forced(self, output_ids: list[int], state: State) -> int | None:
        """The longest token that starts the closing and is valid in context."""
        rest = closing(state)
        pieces, longest = self._vocab()
        for k in range(min(longest, len(rest)), 0, -1):
            for token in pieces.get(rest[:k], ()):  # it must write exactly that in context
                if token not in self.stops and self._text_of(output_ids, token) == (rest[:k],
                                                                                   False):
                    return token
        return None

    def _special(self, token: int) -> bool:
        known = _SPECIALS.setdefault(self.tokenizer, {})
        if token not in known:
            known[token] = self.tokenizer.decode([token], skip_special_tokens=True) == ""
        return known[token]

    def _vocab(self) -> tuple[dict[str, list[int]], int]:
        """({token text: ids}, the longest text's length), built once per tokenizer."""
        per_tokenizer = _VOCABS.setdefault(self.tokenizer, {})
        if self.skip_special not in per_tokenizer:
            pieces: dict[str, list[int]] = {}
            for t in range(self.tokenizer.vocab_size):
                piece = self._decode([t])
                if piece and PENDING not in piece:
                    pieces.setdefault(piece, []).append(t)
            per_tokenizer[self.skip_special] = (pieces, max(map(len, pieces), default=1))
        return per_tokenizer[self.skip_special]


_VOCABS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> texts
_SPECIALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {id: bool}


# ------------------------------------------------------------ the grammars of a request


def schema_state(schema) -> State:
    """The start state for a JSON schema; a 400 naming the keyword outside the subset."""
    try:
        return value_state(compile_schema(schema))
    except SchemaError as e:
        raise APIError(400, f"response_format json_schema: {e}",
                       f"response_format.json_schema.schema.{e.keyword}" if e.keyword
                       else "response_format") from None


def response_format_state(response_format: dict | None) -> State | None:
    """The grammar of `response_format`: None for text."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return value_state(FREE_OBJECT)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise APIError(400, "response_format json_schema needs {'json_schema': {'name': "
                           "..., 'schema': {...}}}", "response_format.json_schema")
        return schema_state(spec["schema"])
    raise APIError(400, f"response_format {kind!r} is not supported; use 'text', "
                   "'json_object' or 'json_schema'", "response_format")


def tool_choice_state(tool_choice, tools: list[dict] | None, parser) -> State | None:
    """The grammar of `tool_choice` "required" or a named function: one call in the format of
    `parser` (the template's tool-call parser), arguments constrained by the function's
    `parameters`. None for "auto" / "none" / absent."""
    if tool_choice in (None, "auto", "none"):
        return None
    named = _named_function(tool_choice)
    functions = _functions(tools)
    if named is not None and named not in functions:
        raise APIError(400, f"tool_choice names function {named!r}, which is not in tools "
                       f"({sorted(functions)})", "tool_choice")
    if parser is None or parser.name not in TOOL_CALL_FORMATS:
        raise APIError(400, "tool_choice 'required' or a named function needs a tool-call "
                       "format: this model's chat template has none; start the server with "
                       f"--tool-call-parser ({sorted(TOOL_CALL_FORMATS)})", "tool_choice")
    before, middle, after = TOOL_CALL_FORMATS[parser.name]
    alternatives = []
    for name, parameters in functions.items():
        if named is None or name == named:
            try:
                node = compile_schema(parameters)
            except SchemaError as e:
                raise APIError(400, f"tools: function {name!r} parameters: {e}",
                               "tools") from None
            alternatives.append([before + json.dumps(name, ensure_ascii=False) + middle, node,
                                 after])
    return start_state(alternatives)


def _named_function(tool_choice) -> str | None:
    if tool_choice == "required":
        return None
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function" and isinstance(
            (tool_choice.get("function") or {}).get("name"), str):
        return tool_choice["function"]["name"]
    raise APIError(400, "tool_choice must be 'none', 'auto', 'required' or {'type': "
                   "'function', 'function': {'name': ...}}", "tool_choice")


def _functions(tools: list[dict] | None) -> dict[str, dict]:
    if not tools:
        raise APIError(400, "tool_choice 'required' or a named function needs tools", "tools")
    out = {}
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise APIError(400, f"tools[{i}] must be {{'type': 'function', 'function': "
                           "{'name': ..., 'parameters': {...}}}", f"tools[{i}]")
        out[fn["name"]] = fn.get("parameters") or {"type": "object", "properties": {},
                                                    "additionalProperties": False}
    return out
