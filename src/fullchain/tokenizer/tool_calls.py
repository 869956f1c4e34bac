"""Tool-call parsers for the three formats of the chat templates (CONVENTIONS.md 2.7, 3.1, 3.2),
whole-text and streaming; used by the server and by `fullchain.llm`.

- internlm2: `<|action_start|><|plugin|>\\n{"name": ..., "parameters": {...}}<|action_end|>`
- hermes (Qwen2.5): one or more `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`
- llama3 (3.1 JSON): the whole reply is `{"name": ..., "parameters": {...}}` (optionally after
  `<|python_tag|>`; several calls separated by `; `)

Streaming follows lmdeploy's generic parser: content passes through until a call starts (a
possible partial start tag is held back); each call is sent as soon as its payload is complete:
first its name (with id and type), then its arguments as one valid JSON string.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as a string
    id: str = field(default_factory=lambda: f"chatcmpl-tool-{uuid.uuid4().hex[:24]}")

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


def _call_from_json(payload: str) -> ToolCall | None:
    start = payload.find("{")
    if start == -1:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(payload[start:])
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("parameters", obj.get("arguments", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    return ToolCall(obj["name"], json.dumps(args, ensure_ascii=False))


class ToolParser:
    """Tag-delimited calls: `start` ... `end`; subclasses set the tags and call limits."""

    name = "base"
    start = ""
    end = ""
    multiple = True  # several calls in one reply

    def find_start(self, text: str) -> int:
        return text.find(self.start)

    def complete_calls(self, tail: str, final: bool) -> list[ToolCall] | None:
        """The calls in `tail` (which starts at the first start tag): the finished ones, and
        with `final` an unterminated last one too. None if a finished payload is not a call."""
        calls = []
        body = r"(.*?)" + re.escape(self.end) if final is False else \
            r"(.*?)(?:" + re.escape(self.end) + r"|$)"
        for m in re.finditer(re.escape(self.start) + body, tail, flags=re.S):
            call = _call_from_json(m.group(1))
            if call is None:
                if final:
                    return None
                continue
            calls.append(call)
            if not self.multiple:
                break
        return calls

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """(content before the first call or None, calls); no valid call -> (text, [])."""
        at = self.find_start(text)
        if at == -1:
            return text, []
        calls = self.complete_calls(text[at:], final=True)
        if not calls:
            return text, []
        content = text[:at]
        return (content if content.strip() else None), calls


class InternLM2Parser(ToolParser):
    name, start, end, multiple = "internlm2", "<|action_start|><|plugin|>", "<|action_end|>", False


class HermesParser(ToolParser):
    name, start, end, multiple = "hermes", "<tool_call>", "</tool_call>", True


class Llama3Parser(ToolParser):
    """The reply IS the call: `{...}` or `<|python_tag|>{...}`, calls separated by `;`."""

    name, start = "llama3", "<|python_tag|>"

    def find_start(self, text: str) -> int:
        stripped = text.lstrip()
        if stripped.startswith(self.start) or stripped.startswith("{"):
            return len(text) - len(stripped)
        return -1

    def complete_calls(self, tail: str, final: bool) -> list[ToolCall] | None:
        if not final:
            return []  # the payload is only known complete at the end of the reply
        body = tail.removeprefix(self.start)
        calls, decoder, pos = [], json.JSONDecoder(), 0
        while True:
            pos = body.find("{", pos)
            if pos == -1:
                break
            try:
                obj, end = decoder.raw_decode(body[pos:])
            except json.JSONDecodeError:
                return None
            call = _call_from_json(json.dumps(obj))
            if call is None:
                return None
            calls.append(call)
            pos += end
        return calls


PARSERS = {p.name: p for p in (InternLM2Parser, HermesParser, Llama3Parser)}


def parser_for_template(template: str | None) -> ToolParser | None:
    """The parser matching a chat template's tool format, or None."""
    if not template:
        return None
    if "<|action_start|>" in template:
        return InternLM2Parser()
    if "<tool_call>" in template:
        return HermesParser()
    if "ipython" in template and '"parameters"' in template:
        return Llama3Parser()
    return None


class StreamingToolParser:
    """Push text deltas; get events ("content", text) and ("tool", index, ToolCall)."""

    def __init__(self, parser: ToolParser) -> None:
        self.parser = parser
        self.text, self.emitted, self.tool_from, self.sent = "", 0, -1, 0

    def push(self, delta: str) -> list[tuple]:
        self.text += delta
        events = []
        if self.tool_from == -1:
            at = self.parser.find_start(self.text)
            if at == -1:
                hold = self._hold()
                if len(self.text) - hold > self.emitted:
                    events.append(("content", self.text[self.emitted:len(self.text) - hold]))
                    self.emitted = len(self.text) - hold
                return events
            if at > self.emitted:
                events.append(("content", self.text[self.emitted:at]))
            self.emitted, self.tool_from = at, at
        calls = self.parser.complete_calls(self.text[self.tool_from:], final=False) or []
        return events + self._new_calls(calls)

    def finish(self) -> list[tuple]:
        """Events for what is left at the end of the reply."""
        if self.tool_from == -1:
            rest = self.text[self.emitted:]
            return [("content", rest)] if rest else []
        calls = self.parser.complete_calls(self.text[self.tool_from:], final=True)
        if calls is None:  # not a call after all: it was text
            rest = self.text[self.emitted:] if self.sent == 0 else ""
            return [("content", rest)] if rest else []
        return self._new_calls(calls)

    @property
    def num_calls(self) -> int:
        return self.sent

    def _new_calls(self, calls: list[ToolCall]) -> list[tuple]:
        events = [("tool", i, c) for i, c in enumerate(calls) if i >= self.sent]
        self.sent = max(self.sent, len(calls))
        return events

    def _hold(self) -> int:
        if isinstance(self.parser, Llama3Parser):
            # a reply that may still turn out to be a call: hold it while blank or a tag prefix
            stripped = self.text.lstrip()
            return len(self.text) if self.parser.start.startswith(stripped) else 0
        tag = self.parser.start
        return max((k for k in range(1, len(tag)) if self.text.endswith(tag[:k])), default=0)
