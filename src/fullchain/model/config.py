"""The model config: one dataclass for the Llama family, and named presets.

Family differences (Qwen2's q/k/v bias, tied embeddings, InternLM2's key names) are data here and
converters in `fullchain.checkpoint`, never branches in the forward pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fullchain.config import ConfigError

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")
ARCHITECTURES = {  # HF architecture name -> model_type
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "MistralForCausalLM": "mistral",
    "InternLM2ForCausalLM": "internlm2",
}


@dataclass(kw_only=True)
class ModelConfig:
    """Architecture of a Llama-layout decoder (field names follow HF's LlamaConfig)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    intermediate_size: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    max_position_embeddings: int = 2048
    attention_bias: bool = False  # bias on q, k, v and o (Llama's flag)
    qkv_bias: bool = False  # bias on q, k, v only (always on in Qwen2)
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = None
    architecture: str = "LlamaForCausalLM"
    extra: dict[str, Any] = field(default_factory=dict)  # unknown HF keys, written back unchanged

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "head_dim", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model config key '{name}' must be positive, got "
                                  f"{getattr(self, name)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"model config: num_attention_heads ({self.num_attention_heads}) must be a "
                f"multiple of num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim % 2:
            raise ConfigError(
                f"model config key 'head_dim' must be even for RoPE, got {self.head_dim}")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"unsupported architecture '{self.architecture}'; "
                              f"supported: {', '.join(ARCHITECTURES)}")
        self.rope_scaling = normalize_rope_scaling(self.rope_scaling)

    @property
    def model_type(self) -> str:
        return ARCHITECTURES[self.architecture]

    @property
    def rope_type(self) -> str:
        return self.rope_scaling["rope_type"] if self.rope_scaling else "default"

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.eos_token_id
        return [] if eos is None else list(eos) if isinstance(eos, list) else [eos]

    def num_params(self, *, embeddings: bool = True) -> int:
        """Parameter count from the shapes (no model needed)."""
        h, d = self.hidden_size, self.head_dim
        q, kv = self.num_attention_heads * d, self.num_key_value_heads * d
        attn = h * (q + 2 * kv) + q * h
        attn += (q + 2 * kv) * (self.attention_bias or self.qkv_bias) + h * self.attention_bias
        mlp = 3 * h * self.intermediate_size
        mlp += (2 * self.intermediate_size + h) * self.mlp_bias
        per_layer = attn + mlp + 2 * h
        emb = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * per_layer + h + (emb if embeddings else 0)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def normalize_rope_scaling(scaling: dict[str, Any] | None) -> dict[str, Any] | None:
    """Accept the legacy `type` and the new `rope_type` spelling; check each type's keys."""
    if not scaling:
        return None
    scaling = dict(scaling)
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return None
    if rope_type not in ROPE_TYPES:
        raise ConfigError(f"rope_scaling type '{rope_type}' is not supported; "
                          f"supported: {', '.join(ROPE_TYPES)}")
    scaling["rope_type"] = scaling["type"] = rope_type
    needed = {"linear": ["factor"], "dynamic": ["factor"], "yarn": ["factor"],
              "llama3": ["factor", "low_freq_factor", "high_freq_factor",
                         "original_max_position_embeddings"]}[rope_type]
    missing = [k for k in needed if k not in scaling]
    if missing:
        raise ConfigError(f"rope_scaling of type '{rope_type}' needs key(s) {missing}")
    if "factor" in scaling and scaling["factor"] is not None:
        scaling["factor"] = float(scaling["factor"])
    return scaling


# Named presets (architecture only). `tiny` is the demo's model; the vocab follows its tokenizer.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=4096, hidden_size=256, num_hidden_layers=6, num_attention_heads=8,
                 num_key_value_heads=4, intermediate_size=768, max_position_embeddings=512,
                 rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-5),
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
                         max_position_embeddings=8192, rope_theta=100000.0,
                         tie_word_embeddings=True, rms_norm_eps=1e-5, bos_token_id=0,
                         eos_token_id=0),
    "llama-3.2-1b": dict(vocab_size=128256, hidden_size=2048, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                         intermediate_size=8192, max_position_embeddings=131072,
                         rope_theta=500000.0, tie_word_embeddings=True, rms_norm_eps=1e-5,
                         rope_scaling={"rope_type": "llama3", "factor": 32.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192},
                         bos_token_id=128000, eos_token_id=128001),
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864,
                         max_position_embeddings=32768, rope_theta=1000000.0, qkv_bias=True,
                         tie_word_embeddings=True, rms_norm_eps=1e-6, bos_token_id=151643,
                         eos_token_id=151643, architecture="Qwen2ForCausalLM"),
    "tinyllama-1.1b": dict(vocab_size=32000, hidden_size=2048, num_hidden_layers=22,
                           num_attention_heads=32, num_key_value_heads=4, intermediate_size=5632,
                           max_position_embeddings=2048, rope_theta=10000.0, rms_norm_eps=1e-5),
    "internlm2.5-1.8b": dict(vocab_size=92544, hidden_size=2048, num_hidden_layers=24,
                             num_attention_heads=16, num_key_value_heads=8,
                             intermediate_size=8192, max_position_embeddings=32768,
                             rope_theta=1000000.0, rms_norm_eps=1e-5, pad_token_id=2,
                             rope_scaling={"type": "dynamic", "factor": 2.0}),
    "internlm2.5-7b": dict(vocab_size=92544, hidden_size=4096, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
                           max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-5,
                           pad_token_id=2, rope_scaling={"type": "dynamic", "factor": 2.0}),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named architecture, e.g. `preset("tiny", vocab_size=8192)`."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})
