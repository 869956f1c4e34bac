"""Logit parity with transformers (the independent reference), random weights, fp32."""

import pytest
import torch

from fullchain.checkpoint import config_to_hf
from fullchain.model import ModelConfig, Transformer

transformers = pytest.importorskip("transformers")

BASE = dict(vocab_size=257, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64,
            rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)

CASES = {
    "llama-gqa-tied": dict(tie_word_embeddings=True),
    "llama-gqa-untied": dict(),
    "llama-mha-bias": dict(num_key_value_heads=4, attention_bias=True, mlp_bias=True),
    "llama-head-dim": dict(head_dim=24),
    "qwen2-bias": dict(qkv_bias=True, architecture="Qwen2ForCausalLM", rope_theta=1e6),
    "mistral": dict(architecture="MistralForCausalLM"),
    "rope-linear": dict(rope_scaling={"type": "linear", "factor": 2.0}),
    "rope-dynamic": dict(rope_scaling={"type": "dynamic", "factor": 2.0},
                         max_position_embeddings=16),
    "rope-llama3": dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 16}),
    "rope-yarn": dict(rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                    "original_max_position_embeddings": 16}),
}


def hf_twin(model: Transformer):
    """The transformers model with the same config.json and the same weights."""
    hf_cfg = transformers.AutoConfig.for_model(**config_to_hf(model.config))
    hf = transformers.AutoModelForCausalLM.from_config(hf_cfg, torch_dtype=torch.float32)
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    return hf.eval()


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("seq_len", [12, 40])
def test_logits_match_transformers(name, seq_len):
    cfg = ModelConfig(**{**BASE, **CASES[name]})
    model = Transformer(cfg)
    model.init_weights(seed=1)
    # non-trivial norms and biases, so a wrongly placed weight cannot hide
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    hf = hf_twin(model)
    ids = torch.randint(0, cfg.vocab_size, (2, seq_len))
    with torch.no_grad():
        ours = model(ids)
        ref = hf(input_ids=ids).logits
    assert (ours - ref).abs().max().item() <= 1e-4


def test_state_dict_keys_equal_hf():
    cfg = ModelConfig(**BASE)
    model = Transformer(cfg)
    hf = hf_twin(model)
    assert set(model.state_dict()) == set(hf.state_dict())
