"""Chat-template rendering exactly as transformers does it, and assistant spans for loss masks.

The environment mirrors `transformers.utils.chat_template_utils`: an immutable sandbox with
`trim_blocks`, `lstrip_blocks` and `loopcontrols`, a `tojson` filter that keeps non-ASCII text, the
`raise_exception` and `strftime_now` globals, and a `{% generation %}` tag that renders its body
(so templates written for `return_assistant_tokens_mask` load). A template must render the same
bytes here as there, because the model was trained on those bytes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from fullchain.config import TokenizerError

# Names a message's reasoning travels under; transformers fills all of them from whichever is set.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")

RenderFn = Callable[[list[dict], bool], str]


def _raise_exception(message: str):
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    # Jinja's own tojson escapes HTML characters (<, >, &, '); chat templates expect plain JSON.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _make_namespace_class():
    import jinja2

    class SafeNamespace(jinja2.utils.Namespace):
        """A namespace refusing underscore attributes, like transformers' (sandbox hardening)."""

        # `self` travels in *args (jinja's own signature trick) so `namespace(self=...)` works.
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                SafeNamespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            SafeNamespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} is refused")

    return SafeNamespace


def _generation_extension():
    import jinja2
    from jinja2.ext import Extension

    class GenerationTag(Extension):
        """`{% generation %}...{% endgeneration %}` renders its body unchanged."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_render_body")
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _render_body(self, caller):
            return caller()

    return GenerationTag


@lru_cache(maxsize=32)
def compile_template(source: str):
    """Compile a chat template in the transformers environment (cached by source text)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_generation_extension(), jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _make_namespace_class()
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise TokenizerError(
            f"chat template does not compile (line {exc.lineno}: {exc.message}); "
            "fix the template in chat_template.jinja or tokenizer_config.json"
        ) from exc


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Deep-copy messages as transformers does before rendering: keys whose value is None are
    dropped (OpenAI sends `content: null` next to `tool_calls`), and reasoning is aliased."""
    if isinstance(messages, Mapping) or isinstance(messages, str):
        raise TokenizerError("messages must be a list of {'role': ..., 'content': ...} dicts")
    out = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise TokenizerError(f"each chat message must be a dict, got {message!r}")
        msg = {k: copy.deepcopy(v) for k, v in message.items() if v is not None}
        reasoning = next((msg[k] for k in _REASONING_FIELDS if msg.get(k) is not None), None)
        if reasoning is not None:
            msg = {"thinking": reasoning, **msg, "reasoning_content": reasoning}
        out.append(msg)
    return out


def render(
    source: str,
    messages: list[dict],
    *,
    tools: list[dict] | None,
    add_generation_prompt: bool,
    variables: Mapping[str, Any],
) -> str:
    """Render `source` with already-normalized `messages`.

    `variables` holds the special-token strings (only those that are set, so an unset token is
    undefined in the template, as in transformers) and any extra template keyword arguments.
    """
    import jinja2

    template = compile_template(source)
    context = {"documents": None, **variables}
    try:
        return template.render(
            messages=messages,
            tools=copy.deepcopy(tools),
            add_generation_prompt=add_generation_prompt,
            **context,
        )
    except jinja2.exceptions.TemplateError as exc:
        raise TokenizerError(f"chat template refused the conversation: {exc}") from exc


def assistant_spans(
    render_fn: RenderFn, messages: list[dict], full_text: str, stop_texts: Sequence[str]
) -> list[tuple[int, int]]:
    """Character spans of `full_text` that belong to assistant replies.

    For the assistant message `i` the span starts where `messages[:i]` rendered with the
    generation prompt ends (so the role header is excluded) and ends after the last end-of-turn
    token (`stop_texts`) inside `messages[:i+1]`'s rendering; text the template adds after that
    token (a newline) is excluded. This needs a prefix-stable template: each shorter rendering
    must be a string prefix of the longer one, otherwise TokenizerError.
    """
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        head = render_fn(messages[:i], True)
        upto = render_fn(messages[: i + 1], False)
        if not upto.startswith(head) or not full_text.startswith(upto):
            raise TokenizerError(
                f"chat template is not prefix-stable at message {i}: rendering fewer messages does "
                "not give a prefix of the full rendering, so the assistant loss mask cannot be "
                "computed; use a prefix-stable template (e.g. a builtin one: chatml, internlm2, "
                "llama3)"
            )
        spans.append((len(head), _end_of_turn(upto, len(head), stop_texts)))
    return spans


def _end_of_turn(text: str, start: int, stop_texts: Sequence[str]) -> int:
    """End offset of the reply that starts at `start`: just after its last end-of-turn token, or
    the end of `text` without trailing whitespace when the template emits none."""
    found = [(text.rfind(stop, start), stop) for stop in stop_texts if stop]
    ends = [pos + len(stop) for pos, stop in found if pos >= 0]
    if ends:
        return max(ends)
    return max(start, len(text.rstrip()))


def mask_from_spans(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> list[int]:
    """1 for each token whose character range overlaps a span (a token straddling a boundary is
    counted in, as transformers' `return_assistant_tokens_mask` does), else 0."""
    mask = []
    for start, end in offsets:
        hit = any(start < span_end and end > span_start for span_start, span_end in spans)
        mask.append(1 if hit else 0)
    return mask
