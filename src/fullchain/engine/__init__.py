"""The serving engine: continuous batching over a paged KV cache with prefix caching.

`Engine` (sync: add_request / step / generate / score) and `AsyncEngine` (asyncio streaming);
the reference loop `fullchain.generate` is what its greedy outputs are tested against.
"""

from fullchain.engine.engine import (
    CompletionOutput,
    Engine,
    RequestError,
    RequestOutput,
    StepOutput,
)
from fullchain.engine.params import EngineConfig, SamplingParams

__all__ = ["CompletionOutput", "Engine", "EngineConfig", "RequestError", "RequestOutput",
           "SamplingParams", "StepOutput"]
