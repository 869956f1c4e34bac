"""The OpenAI-compatible HTTP server over the engine (`fullchain serve`), with a web chat at /.

`create_app(AsyncEngine(engine), tokenizer, model_name=...)` gives the FastAPI app; `serve`
runs it with uvicorn. FastAPI and uvicorn are the `serve` extra.
"""

from __future__ import annotations


def create_app(*args, **kwargs):
    from fullchain.serve.app import create_app as _create_app
    return _create_app(*args, **kwargs)


def serve(model_dir, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          model_name: str | None = None, dtype: str = "float32", device: str = "cpu",
          engine_config=None, tool_parser: str | None = None, max_queued: int = 256) -> None:
    """Load MODEL_DIR and serve it until interrupted."""
    import logging
    from pathlib import Path

    import uvicorn

    from fullchain.engine import Engine
    from fullchain.engine.async_engine import AsyncEngine

    engine = Engine.from_pretrained(model_dir, engine_config, dtype=dtype, device=device)
    logging.getLogger("fullchain.serve").info("%s: %s", model_dir, engine.describe())
    app = create_app(AsyncEngine(engine, max_queued=max_queued), engine.tokenizer,
                     model_name=model_name or Path(model_dir).name, api_key=api_key,
                     tool_parser=tool_parser)
    uvicorn.run(app, host=host, port=port, log_level="info")
