"""InternLM2 -> Llama tensor names and the packed `wqkv` split (CONVENTIONS §2.2-2.3)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch

from fullchain.model.config import ModelConfig

_RENAMES = [  # full-name patterns, never substrings (`output` appears inside other names)
    (r"^model\.tok_embeddings\.weight$", "model.embed_tokens.weight"),
    (r"^output\.weight$", "lm_head.weight"),
    (r"^model\.norm\.weight$", "model.norm.weight"),
    (r"^model\.layers\.(\d+)\.attention\.wo\.(weight|bias)$",
     r"model.layers.\1.self_attn.o_proj.\2"),
    (r"^model\.layers\.(\d+)\.feed_forward\.w1\.weight$", r"model.layers.\1.mlp.gate_proj.weight"),
    (r"^model\.layers\.(\d+)\.feed_forward\.w3\.weight$", r"model.layers.\1.mlp.up_proj.weight"),
    (r"^model\.layers\.(\d+)\.feed_forward\.w2\.weight$", r"model.layers.\1.mlp.down_proj.weight"),
    (r"^model\.layers\.(\d+)\.attention_norm\.weight$", r"model.layers.\1.input_layernorm.weight"),
    (r"^model\.layers\.(\d+)\.ffn_norm\.weight$",
     r"model.layers.\1.post_attention_layernorm.weight"),
]
_WQKV = re.compile(r"^model\.layers\.(\d+)\.attention\.wqkv\.(weight|bias)$")


def split_wqkv(w: torch.Tensor,
               cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows are grouped per KV head: [q_(g*G) .. q_(g*G+G-1), k_g, v_g] for each group g."""
    kv, d = cfg.num_key_value_heads, cfg.head_dim
    group = cfg.num_attention_heads // kv
    grouped = w.reshape(kv, group + 2, d, *w.shape[1:])
    q = grouped[:, :group].reshape(kv * group * d, *w.shape[1:])
    k = grouped[:, group].reshape(kv * d, *w.shape[1:])
    v = grouped[:, group + 1].reshape(kv * d, *w.shape[1:])
    return q, k, v


def pack_wqkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """The inverse of `split_wqkv` (used to write InternLM2-layout test fixtures)."""
    kv, d = cfg.num_key_value_heads, cfg.head_dim
    group = cfg.num_attention_heads // kv
    rest = q.shape[1:]
    parts = [q.reshape(kv, group, d, *rest), k.reshape(kv, 1, d, *rest), v.reshape(kv, 1, d, *rest)]
    return torch.cat(parts, dim=1).reshape(-1, *rest)


def convert_tensor(name: str, tensor: torch.Tensor,
                   cfg: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the Llama-named tensor(s) for one InternLM2 tensor; unknown names pass through."""
    m = _WQKV.match(name)
    if m:
        layer, kind = m.groups()
        for proj, part in zip(("q_proj", "k_proj", "v_proj"), split_wqkv(tensor, cfg)):
            yield f"model.layers.{layer}.self_attn.{proj}.{kind}", part.contiguous()
        return
    for pattern, repl in _RENAMES:
        if re.match(pattern, name):
            yield re.sub(pattern, repl, name), tensor
            return
    yield name, tensor
