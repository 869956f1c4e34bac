import sys
from pathlib import Path

import pytest

from fullchain.engine import Engine

sys.path.insert(0, str(Path(__file__).parent))  # for `import serve_helpers`
from serve_helpers import engine_config, running_server, save_tiny_model, tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tok):
    return save_tiny_model(tok, tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def server(model_dir):
    """One server over the tiny model for a test module: (base_url, AsyncEngine, Engine)."""
    engine = Engine.from_pretrained(model_dir, engine_config())
    with running_server(engine, engine.tokenizer) as (url, async_engine):
        yield url, async_engine, engine
