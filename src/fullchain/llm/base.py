"""The protocol every LLM answers: `chat`, `complete`, `score`, and the types they return.

Both implementations (`LocalLLM` over the engine, `OpenAILLM` over HTTP) take the same
`GenParams` and return the same results, so code written against `LLM` runs unchanged on a model
folder or on any OpenAI-compatible server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fullchain.config import ConfigError
from fullchain.tokenizer.tool_calls import ToolCall

Message = Mapping[str, Any]  # OpenAI chat message: {"role", "content", "tool_calls"?, ...}
Score = tuple[float, bool]  # (sum of the continuation's log-probs, every token the greedy one)


@dataclass(kw_only=True)
class GenParams:
    """How to decode. temperature 0 is greedy; `seed` makes sampling repeatable; a stop string
    ends the text before it. `logprobs` asks `complete` for each generated token's log-prob."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None
    logprobs: bool = False

    def __post_init__(self) -> None:
        checks = [(self.max_tokens >= 1, "max_tokens must be >= 1"),
                  (self.temperature >= 0, "temperature must be >= 0 (0 is greedy)"),
                  (0 < self.top_p <= 1, "top_p must be in (0, 1]")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{message} (generation parameters)")
        self.stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ChatResult:
    """One assistant turn: its text (the content before any tool call), the parsed tool calls,
    why it ended ("stop", "length" or "tool_calls") and the token counts."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass
class Completion:
    """The continuation of one prompt; `logprobs` (one per generated token) when asked for."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[float] | None = None


@runtime_checkable
class LLM(Protocol):
    """A language model behind three calls. Implementations are synchronous and hold no
    conversation state; errors are `fullchain.config` errors that name the model and the fix."""

    model: str

    def chat(self, messages: Sequence[Message], *, tools: Sequence[Mapping] | None = None,
             params: GenParams | None = None) -> ChatResult:
        """Answer a conversation with one assistant turn; with `tools` (OpenAI function schemas)
        the reply's calls come back parsed in `tool_calls`."""
        ...

    def complete(self, prompts: Sequence[str], params: GenParams | None = None,
                 ) -> list[Completion]:
        """Continue each raw-text prompt (no chat template), in input order."""
        ...

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Score]:
        """For each (context, continuation): the sum of the continuation tokens' log-probs given
        the context, and whether each of them is the model's greedy choice (lm-eval's
        loglikelihood). The text is tokenized whole; see `continuation_start`."""
        ...


def continuation_start(offsets: Sequence[int], text: str, context: str,
                       continuation: str) -> int:
    """Index of the first continuation token of a prompt tokenized whole, as an OpenAI server
    echoes it: `text` is the prompt written back and `offsets` each token's start in it.

    The boundary is counted from the end of `text` when it ends with the continuation, so that
    a BOS written out in front, or a prefix the tokenizer normalised, does not shift it. A token
    that straddles the boundary belongs to the continuation: its probability covers all of the
    continuation's characters."""
    boundary = len(text) - len(continuation) if text.endswith(continuation) else len(context)
    ends = [*offsets[1:], len(text)]
    return sum(1 for end in ends if end <= boundary)
