"""`response_format: {"type": "json_object"}`: a logits processor that only lets through tokens
keeping the reply a valid prefix of one JSON object, and ends the reply when it is complete.

It checks the 64 most likely tokens each step (a character-level JSON automaton over the decoded
text), so it is cheap and leaves the model's preferences intact among the valid ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

INVALID, PARTIAL, COMPLETE = 0, 1, 2
CANDIDATES = 64
_LITERALS = {"t": "rue", "f": "alse", "n": "ull"}


def json_prefix_state(text: str) -> int:
    """INVALID, PARTIAL (a prefix of a JSON object) or COMPLETE (one whole object)."""
    stack: list[str] = []
    state, lit, key, i = "start", "", False, 0
    while i < len(text):
        c = text[i]
        i += 1
        if state == "string":
            if c == "\\":
                state = "escape"
            elif c == '"':
                state = "colon" if key else "after"
            elif c < " ":
                return INVALID
            continue
        if state == "escape":
            state = "string"
            continue
        if state == "number":
            if c in "0123456789+-.eE":
                continue
            state, i = "after", i - 1  # the number ended: read c again
            continue
        if state == "literal":
            if not lit.startswith(c):
                return INVALID
            lit = lit[1:]
            state = "literal" if lit else "after"
            continue
        if c in " \t\n\r":
            continue
        state, stack, lit, key = _structural(state, stack, c)
        if state == "invalid":
            return INVALID
    return COMPLETE if state == "done" else PARTIAL


def _structural(state: str, stack: list[str], c: str) -> tuple[str, list[str], str, bool]:
    bad = ("invalid", stack, "", False)
    closed = ("done" if len(stack) == 1 else "after", stack[:-1], "", False)
    if state == "start":
        return ("key_or_end", ["{"], "", False) if c == "{" else bad
    if state in ("value", "value_or_end"):
        if c == "]" and state == "value_or_end":
            return closed
        if c in "{[":
            return ("key_or_end" if c == "{" else "value_or_end", stack + [c], "", False)
        if c == '"':
            return ("string", stack, "", False)
        if c in "-0123456789":
            return ("number", stack, "", False)
        return ("literal", stack, _LITERALS[c], False) if c in _LITERALS else bad
    if state in ("key_or_end", "key"):
        if c == '"':
            return ("string", stack, "", True)
        return closed if c == "}" and state == "key_or_end" else bad
    if state == "colon":
        return ("value", stack, "", False) if c == ":" else bad
    if state == "after" and stack:
        if c == ",":
            return ("key" if stack[-1] == "{" else "value", stack, "", False)
        if (c, stack[-1]) in (("}", "{"), ("]", "[")):
            return closed
    return bad


def json_object_processor(tokenizer, stop_ids: Sequence[int]):
    """A `SamplingParams.logits_processor` for JSON-object replies."""
    stops = [int(t) for t in (stop_ids or tokenizer.stop_token_ids)]

    def process(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        text = tokenizer.decode(output_ids, skip_special_tokens=True)
        allowed = []
        if json_prefix_state(text) == COMPLETE:
            allowed = stops
        else:
            top = torch.topk(logits, min(CANDIDATES, logits.numel())).indices.tolist()
            for t in top:
                if t in stops:
                    continue
                new = tokenizer.decode(output_ids + [t], skip_special_tokens=True)
                if new != text and json_prefix_state(new) != INVALID:
                    allowed.append(t)
            allowed = allowed or stops  # nothing valid among the likely ones: end the reply
        mask = torch.full_like(logits, float("-inf"))
        mask[torch.tensor(allowed, dtype=torch.long)] = 0.0
        return logits + mask

    return process
