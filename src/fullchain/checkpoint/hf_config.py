"""`config.json` <-> ModelConfig. Reads legacy and transformers-v5 spellings; writes the legacy one.

(CONVENTIONS §1.2-1.4, §2.1): `rope_theta`/`rope_scaling` or `rope_parameters`; `torch_dtype` or
`dtype`; Llama's `attention_bias`, InternLM2's `bias`, Qwen2's implied q/k/v bias.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from fullchain.config import CheckpointError
from fullchain.model.config import ARCHITECTURES, ModelConfig

log = logging.getLogger(__name__)

_MODEL_TYPE_TO_ARCH = {v: k for k, v in ARCHITECTURES.items()}
# keys we read into ModelConfig fields, or that carry nothing we keep
_CONSUMED = {
    "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size",
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act",
    "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters",
    "attention_bias", "bias", "mlp_bias", "tie_word_embeddings", "sliding_window",
    "use_sliding_window", "max_window_layers", "layer_types", "initializer_range", "bos_token_id",
    "eos_token_id", "pad_token_id", "torch_dtype", "dtype", "transformers_version", "auto_map",
    "use_cache", "pretraining_tp", "attention_dropout", "attn_implementation",
    "_name_or_path", "partial_rotary_factor",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def config_from_hf(d: dict[str, Any], *, source: str = "config.json") -> ModelConfig:
    """Build a ModelConfig from a parsed HF config.json; InternLM2 becomes the Llama layout."""
    arch = (d.get("architectures") or [None])[0] or _MODEL_TYPE_TO_ARCH.get(d.get("model_type"))
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"{source}: architecture {arch or d.get('model_type')!r} is not supported; "
            f"fullchain loads {', '.join(ARCHITECTURES)}")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                           "num_attention_heads", "intermediate_size") if k not in d]
    if missing:
        raise CheckpointError(f"{source}: missing required key(s) {missing}")
    if d.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{source}: hidden_act {d['hidden_act']!r} is not supported (silu)")
    theta, scaling = _rope(d, source)
    model_type = ARCHITECTURES[arch]
    use_window = d.get("use_sliding_window", model_type == "mistral")
    window = d.get("sliding_window") if use_window else None
    bias_key = "bias" if model_type == "internlm2" else "attention_bias"
    return ModelConfig(
        vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
        num_hidden_layers=d["num_hidden_layers"], num_attention_heads=d["num_attention_heads"],
        num_key_value_heads=d.get("num_key_value_heads"), head_dim=d.get("head_dim"),
        intermediate_size=d["intermediate_size"], rms_norm_eps=d.get("rms_norm_eps", 1e-6),
        rope_theta=theta, rope_scaling=scaling,
        max_position_embeddings=d.get("max_position_embeddings", 2048),
        attention_bias=bool(d.get(bias_key, False)),
        qkv_bias=model_type == "qwen2", mlp_bias=bool(d.get("mlp_bias", False)),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        sliding_window=window, initializer_range=d.get("initializer_range", 0.02),
        bos_token_id=d.get("bos_token_id"), eos_token_id=d.get("eos_token_id"),
        pad_token_id=d.get("pad_token_id"),
        # InternLM2 is converted to the Llama layout on load (CONVENTIONS §2.2)
        architecture="LlamaForCausalLM" if model_type == "internlm2" else arch,
        extra={k: v for k, v in d.items() if k not in _CONSUMED},
    )


def _rope(d: dict[str, Any], source: str) -> tuple[float, dict[str, Any] | None]:
    theta = d.get("rope_theta", 10000.0)
    scaling = d.get("rope_scaling")
    params = d.get("rope_parameters")
    if isinstance(params, dict) and params:
        if any(isinstance(v, dict) for v in params.values()):
            raise CheckpointError(f"{source}: per-layer rope_parameters are not supported")
        theta = params.get("rope_theta", theta)
        if params.get("rope_type", params.get("type", "default")) != "default":
            scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    factor = (scaling or {}).get("partial_rotary_factor", d.get("partial_rotary_factor", 1.0))
    if factor != 1.0:
        raise CheckpointError(f"{source}: partial_rotary_factor {factor} is not implemented")
    if scaling:
        scaling = {k: v for k, v in scaling.items() if k != "partial_rotary_factor"}
    return float(theta), scaling


def config_to_hf(cfg: ModelConfig, *, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The legacy-spelled config.json (read by transformers 4/5, vLLM, LMDeploy, llama.cpp)."""
    model_type = cfg.model_type
    if cfg.qkv_bias and not cfg.attention_bias and model_type != "qwen2":
        raise CheckpointError("a model with q/k/v bias but no o_proj bias must be saved as "
                              "Qwen2ForCausalLM (set architecture='Qwen2ForCausalLM')")
    if model_type == "qwen2" and cfg.attention_bias:
        raise CheckpointError("Qwen2ForCausalLM has no o_proj bias; save it as LlamaForCausalLM")
    out: dict[str, Any] = {
        "architectures": [cfg.architecture], "model_type": model_type,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim,
        "hidden_act": "silu", "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
        "rope_scaling": cfg.rope_scaling, "tie_word_embeddings": cfg.tie_word_embeddings,
        "initializer_range": cfg.initializer_range, "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id,
        "attention_dropout": 0.0, "use_cache": True,
        "torch_dtype": _dtype_name(dtype),
    }
    if model_type == "llama":
        out.update(attention_bias=cfg.attention_bias, mlp_bias=cfg.mlp_bias, pretraining_tp=1)
    elif cfg.mlp_bias or cfg.attention_bias:
        raise CheckpointError(
            f"{cfg.architecture} has no mlp/o_proj bias; save as LlamaForCausalLM")
    if model_type in ("mistral", "qwen2"):
        out["sliding_window"] = cfg.sliding_window
    if model_type == "qwen2":
        out["use_sliding_window"] = False
    return {**cfg.extra, **out}


def _dtype_name(dtype: torch.dtype) -> str:
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise CheckpointError(f"dtype {dtype} cannot be saved; use one of {', '.join(DTYPES)}")


def parse_dtype(name: str | torch.dtype | None, *, key: str = "dtype") -> torch.dtype | None:
    """'float32' | 'fp32' | 'bf16' | 'bfloat16' | 'fp16' | 'float16' | torch.dtype | None."""
    if name is None or isinstance(name, torch.dtype):
        return name
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
    name = aliases.get(name, name)
    if name not in DTYPES:
        raise CheckpointError(f"{key} {name!r} is not one of float32, bfloat16, float16")
    return DTYPES[name]
