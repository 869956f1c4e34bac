import sys
from pathlib import Path

import pytest

from fullchain.engine import Engine

# the server tests' helpers: a tiny model served in-process on a loopback port
sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from serve_helpers import engine_config, running_server, save_tiny_model, tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tok):
    return save_tiny_model(tok, tmp_path_factory.mktemp("llm") / "tiny")


@pytest.fixture(scope="module")
def server_url(model_dir):
    """The tiny model behind `fullchain serve`'s app on a loopback port: its API root."""
    engine = Engine.from_pretrained(model_dir, engine_config())
    with running_server(engine, engine.tokenizer) as (url, _):
        yield f"{url}/v1"
