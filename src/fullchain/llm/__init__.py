"""The small LLM protocol — chat, complete, score — with a local-engine and an OpenAI-HTTP
implementation, so data synthesis, evaluation and agents run the same on a model folder, on
`fullchain serve`, vLLM, LMDeploy or a hosted API.

    llm = load_llm("~/models/Qwen2.5-0.5B-Instruct")      # LocalLLM over the engine
    llm = load_llm("http://127.0.0.1:8000/v1")            # OpenAILLM over HTTP
    llm.chat([{"role": "user", "content": "Hi"}], params=GenParams(max_tokens=64)).text
    llm.complete(["The capital of France is"])[0].text
    llm.score([("The capital of France is", " Paris")])   # [(log-prob sum, is greedy)]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fullchain.config import LLMError
from fullchain.llm.base import (
    LLM,
    ChatResult,
    Completion,
    GenParams,
    Score,
    Usage,
    continuation_start,
)
from fullchain.llm.openai_http import OpenAILLM
from fullchain.tokenizer.tool_calls import ToolCall

if TYPE_CHECKING:
    from fullchain.llm.local import LocalLLM

__all__ = ["LLM", "ChatResult", "Completion", "GenParams", "LocalLLM", "OpenAILLM", "Score",
           "ToolCall", "Usage", "continuation_start", "is_url", "load_llm"]


def __getattr__(name: str) -> Any:
    # LocalLLM brings in torch and the engine; an HTTP-only user does not pay for them
    if name == "LocalLLM":
        from fullchain.llm.local import LocalLLM
        return LocalLLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_url(spec: str | os.PathLike) -> bool:
    return str(spec).startswith(("http://", "https://"))


def load_llm(spec: str | os.PathLike, *, model: str | None = None, api_key: str = "",
             dtype: str = "float32", device: str = "auto") -> LLM:
    """An `http(s)://` URL (the API root, e.g. ``http://host:8000/v1``) → `OpenAILLM` (`model`
    None takes the server's first model); a model folder → `LocalLLM` on `device` (auto: CUDA
    when there is one) with `model` as its reported name."""
    if is_url(spec):
        return OpenAILLM(str(spec), model=model, api_key=api_key)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise LLMError(f"{spec}: neither an http(s):// URL nor a model folder; give the API root "
                       "of an OpenAI-compatible server (http://host:port/v1) or an HF model folder")
    from fullchain.llm.local import LocalLLM
    if device == "auto":
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return LocalLLM.from_pretrained(path, dtype=dtype, device=device, model=model)
