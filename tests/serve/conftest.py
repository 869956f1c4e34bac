import sys
from pathlib import Path

import pytest
import torch

from fullchain.checkpoint import save_model
from fullchain.engine import Engine
from fullchain.model import ModelConfig, Transformer
from fullchain.tokenizer import get_builtin_template, train_bpe

sys.path.insert(0, str(Path(__file__).parent))  # for `import serve_helpers`
from serve_helpers import SPECIALS, TEXTS, engine_config, running_server  # noqa: E402


@pytest.fixture(scope="session")
def tok():
    t = train_bpe(TEXTS, vocab_size=320, special_tokens=SPECIALS, eos_token="<|endoftext|>")
    t.chat_template = get_builtin_template("chatml")
    return t


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tok):
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                      max_position_embeddings=512, eos_token_id=tok.eos_token_id)
    model = Transformer(cfg)
    model.init_weights(seed=3)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    folder = tmp_path_factory.mktemp("serve") / "tiny"
    save_model(model, folder)
    tok.save(folder)
    return folder


@pytest.fixture(scope="module")
def server(model_dir):
    """One server over the tiny model for a test module: (base_url, AsyncEngine, Engine)."""
    engine = Engine.from_pretrained(model_dir, engine_config())
    with running_server(engine, engine.tokenizer) as (url, async_engine):
        yield url, async_engine, engine
