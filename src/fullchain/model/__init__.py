"""The model core: one Llama-family decoder with HF module names, its config and attention."""

from fullchain.model.attention import (
    Attention,
    DocumentAttention,
    KVCache,
    causal,
    doc_ids_from_positions,
)
from fullchain.model.config import PRESETS, ModelConfig, preset
from fullchain.model.transformer import Transformer

__all__ = [
    "PRESETS", "Attention", "DocumentAttention", "KVCache", "ModelConfig", "Transformer",
    "causal", "doc_ids_from_positions", "preset",
]
