import sys
from pathlib import Path

import pytest
import torch

from fullchain.checkpoint import save_model
from fullchain.engine import Engine
from fullchain.model import ModelConfig, Transformer
from fullchain.tokenizer import get_builtin_template, train_bpe

# the server tests' helpers: a tiny model served in-process on a loopback port
sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
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
        model.lm_head.weight.mul_(20)  # sharp logits: greedy replies vary instead of looping
    folder = tmp_path_factory.mktemp("llm") / "tiny"
    save_model(model, folder)
    tok.save(folder)
    return folder


@pytest.fixture(scope="module")
def server_url(model_dir):
    """The tiny model behind `fullchain serve`'s app on a loopback port: its API root."""
    engine = Engine.from_pretrained(model_dir, engine_config())
    with running_server(engine, engine.tokenizer) as (url, _):
        yield f"{url}/v1"
