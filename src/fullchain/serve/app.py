"""The FastAPI app: routes, API key, errors in OpenAI's shape, and the small endpoints.

The chat and completion endpoints live in `serve.chat` and `serve.completions` (schema in
`serve.schema`); everything reaches the model through the `AsyncEngine`.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fullchain.config import FullchainError
from fullchain.engine.async_engine import AsyncEngine, EngineBusy, EngineDead
from fullchain.serve.schema import (
    APIError,
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from fullchain.tokenizer import Tokenizer
from fullchain.tokenizer.tool_calls import PARSERS, ToolParser, parser_for_template

log = logging.getLogger(__name__)
OPEN_PATHS = ("/", "/health", "/metrics", "/favicon.ico")


@dataclass
class ServerState:
    engine: AsyncEngine
    tokenizer: Tokenizer
    model_name: str
    api_key: str | None = None
    tool_parser: ToolParser | None = None

    @property
    def max_model_len(self) -> int:
        return self.engine.engine.max_model_len

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(404, f"The model '{name}' does not exist.", "model")

    def check_prompt(self, ids: list[int], max_tokens: int) -> None:
        if len(ids) >= self.max_model_len and (max_tokens > 0 or len(ids) > self.max_model_len):
            raise APIError(400, f"This model's maximum context length is {self.max_model_len} "
                           f"tokens, but the prompt has {len(ids)} tokens; shorten it.",
                           "messages")


def create_app(engine: AsyncEngine, tokenizer: Tokenizer, *, model_name: str,
               api_key: str | None = None, tool_parser: str | None = None) -> FastAPI:
    """The app over a started-or-not AsyncEngine (it is started with the app and stopped
    with it). `tool_parser` None picks the parser matching the chat template."""
    if tool_parser is not None and tool_parser not in PARSERS:
        raise FullchainError(f"unknown tool parser {tool_parser!r}; use one of {list(PARSERS)}")
    parser = PARSERS[tool_parser]() if tool_parser else parser_for_template(
        tokenizer.chat_template)
    state = ServerState(engine, tokenizer, model_name, api_key, parser)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            engine.shutdown()

    app = FastAPI(title="fullchain", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.fc = state
    _add_errors(app)
    _add_auth(app, state)
    _add_routes(app, state)
    return app


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


def _add_errors(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return _error(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return _error(APIError(400, f"invalid request: {where}: {first.get('msg', e)}", where))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return _error(APIError(e.status_code, str(e.detail)))

    @app.exception_handler(EngineBusy)
    async def busy(request: Request, e: EngineBusy):
        return _error(APIError(429, str(e)))

    @app.exception_handler(EngineDead)
    async def dead(request: Request, e: EngineDead):
        return _error(APIError(503, str(e)))

    @app.exception_handler(FullchainError)
    async def bad_request(request: Request, e: FullchainError):
        return _error(APIError(400, str(e)))

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return _error(APIError(500, f"internal error: {type(e).__name__}: {e}"))


def _add_auth(app: FastAPI, state: ServerState) -> None:
    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if state.api_key and request.url.path not in OPEN_PATHS:
            if request.headers.get("authorization", "") != f"Bearer {state.api_key}":
                return _error(APIError(401, "Incorrect or missing API key: send "
                                            "'Authorization: Bearer <key>'"))
        return await call_next(request)


def _add_routes(app: FastAPI, state: ServerState) -> None:
    _add_service_routes(app, state)
    _add_generation_routes(app, state)
    _add_tokenizer_routes(app, state)


def _add_service_routes(app: FastAPI, state: ServerState) -> None:
    """The web chat, health, the model list and the metrics."""
    @app.get("/", response_class=HTMLResponse)
    async def index():
        return resources.files("fullchain.serve").joinpath("static/index.html").read_text("utf-8")

    @app.get("/health")
    async def health():
        if not state.engine.alive:
            raise APIError(503, "the engine loop is not running")
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{
            "id": state.model_name, "object": "model", "created": int(state.engine.started),
            "owned_by": "fullchain", "root": state.model_name, "parent": None,
            "max_model_len": state.max_model_len, "permission": []}]}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        return prometheus_text(state.engine.stats())


def _add_generation_routes(app: FastAPI, state: ServerState) -> None:
    from fullchain.serve.chat import chat_completions
    from fullchain.serve.completions import completions

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        return await chat_completions(state, body, request)

    @app.post("/v1/completions")
    async def complete(body: CompletionRequest, request: Request):
        return await completions(state, body, request)


def _add_tokenizer_routes(app: FastAPI, state: ServerState) -> None:
    """vLLM's /tokenize and /detokenize, and the tokenizer's settings."""
    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest):
        state.check_model(body.model)
        if body.messages is not None:
            ids = state.tokenizer.apply_chat_template(
                body.messages, add_generation_prompt=body.add_generation_prompt, tokenize=True)
        elif body.prompt is not None:
            ids = state.tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens)
        else:
            raise APIError(400, "give 'prompt' or 'messages'")
        out = {"count": len(ids), "max_model_len": state.max_model_len, "tokens": ids}
        if body.return_token_strs:
            out["token_strs"] = [state.tokenizer.id_to_token(i) for i in ids]
        return out

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest):
        state.check_model(body.model)
        if any(not 0 <= t < state.tokenizer.vocab_size for t in body.tokens):
            raise APIError(400, f"token ids must be in [0, {state.tokenizer.vocab_size})",
                           "tokens")
        return {"prompt": state.tokenizer.decode(body.tokens)}

    @app.get("/tokenizer_info")
    async def tokenizer_info():
        tok = state.tokenizer
        return {"eos_token": tok.eos_token, "bos_token": tok.bos_token,
                "pad_token": tok.pad_token, "chat_template": tok.chat_template,
                "model_max_length": state.max_model_len, "vocab_size": tok.vocab_size}


HELP = {
    "queue_length": ("gauge", "Requests waiting for admission."),
    "running_requests": ("gauge", "Sequences in the running batch."),
    "kv_blocks_used": ("gauge", "KV cache blocks referenced or holding unevicted prefixes."),
    "kv_blocks_free": ("gauge", "KV cache blocks available (including evictable cached ones)."),
    "prefix_cache_hit_rate": ("gauge", "Prompt tokens served from the prefix cache / looked up."),
    "generation_tokens_total": ("counter", "Tokens generated since start."),
    "generation_tokens_per_second": ("gauge", "Generated tokens per second, last 10 s."),
    "preemptions_total": ("counter", "Sequences preempted (recomputed) since start."),
}


def prometheus_text(stats: dict[str, float]) -> str:
    lines = []
    for key, value in stats.items():
        kind, text = HELP[key]
        name = f"fullchain_{key}"
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    lines.append(f"fullchain_scrape_timestamp_seconds {time.time():.3f}")
    return "\n".join(lines) + "\n"
