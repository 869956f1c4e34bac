import pytest
import torch

from fullchain.model import ModelConfig, Transformer
from fullchain.tokenizer import get_builtin_template, train_bpe

TEXTS = [f"the quick brown fox number {i} jumps over the lazy dog and runs home to {i * 7}"
         for i in range(60)]


@pytest.fixture(scope="session")
def tiny_tok():
    tok = train_bpe(TEXTS, vocab_size=300,
                    special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                    eos_token="<|endoftext|>")
    tok.chat_template = get_builtin_template("chatml")
    return tok


def make_model(vocab_size: int, *, seed: int = 5, max_len: int = 512) -> Transformer:
    cfg = ModelConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                      max_position_embeddings=max_len, eos_token_id=None)
    model = Transformer(cfg)
    model.init_weights(seed=seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # sharp logits: greedy output varies instead of looping
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model(tiny_tok):
    return make_model(tiny_tok.vocab_size)
