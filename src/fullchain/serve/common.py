"""Glue shared by the chat and completion endpoints: starting a request on the engine, SSE
framing, and mid-stream errors (an error event, then [DONE])."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence

from fastapi.responses import StreamingResponse

from fullchain.config import FullchainError
from fullchain.engine import SamplingParams, StepOutput
from fullchain.engine.async_engine import AsyncEngine
from fullchain.serve.schema import APIError

log = logging.getLogger(__name__)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


async def start(engine: AsyncEngine, ids: Sequence[int], params: SamplingParams,
                ) -> AsyncIterator[StepOutput]:
    """Submit a request and wait for its first output, so that a rejected request is an HTTP
    error (not a broken stream). Returns an iterator over all of its outputs, first included."""
    stream = engine.stream(ids, params)
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        first = None
    except FullchainError as e:
        if type(e).__name__ in ("EngineBusy", "EngineDead"):
            raise
        raise APIError(400, str(e)) from None

    async def chain() -> AsyncIterator[StepOutput]:
        try:
            if first is not None:
                yield first
            async for out in stream:
                yield out
        finally:
            await stream.aclose()  # a client gone mid-stream aborts the request at once

    return chain()


def sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def sse_response(events: AsyncIterator[dict]) -> StreamingResponse:
    """Frame JSON events as SSE; a failure mid-stream is sent as an error event, then [DONE]."""

    async def body():
        try:
            async for event in events:
                yield sse(event)
        except Exception as e:  # the status is already 200: report in the stream
            log.exception("stream failed")
            status = e.status if isinstance(e, APIError) else 500
            message = e.message if isinstance(e, APIError) else f"{type(e).__name__}: {e}"
            yield sse(APIError(status, message).body())
        yield sse("[DONE]")

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id])


def usage(prompt_tokens: int, completion_tokens: int, cached: int = 0) -> dict:
    out = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
           "total_tokens": prompt_tokens + completion_tokens}
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out
