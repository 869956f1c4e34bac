"""Attention backends: the model calls `attention(layer_idx, q, k, v)`, whichever one runs.

q is [B, H, T, D] and k, v are [B, KV, T, D] for the T new tokens, already rotated. Each backend
returns [B, H, T, D]. Training uses `causal` or `DocumentAttention` (block-diagonal causal for
packed sequences); generation uses `KVCache.at(start)`; the serving engine brings a paged one.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


class Attention(Protocol):
    def __call__(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor) -> torch.Tensor: ...


def repeat_kv(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, KV, T, D] -> [B, H, T, D]: query head h reads kv head h // (H // KV), as in HF."""
    b, kv, t, d = x.shape
    if kv == num_heads:
        return x
    return x[:, :, None].expand(b, kv, num_heads // kv, t, d).reshape(b, num_heads, t, d)


# PyTorch's CPU flash attention reads a kv head for each of its query heads itself (torch >= 2.5):
# no copy of the keys and values per query head, and their gradients are not summed back
_GQA_IN_SDPA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, is_causal: bool = False,
         attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`F.scaled_dot_product_attention` for q [B, H, T, D] and k, v [B, KV, S, D], KV <= H."""
    h = q.shape[1]
    if k.shape[1] != h and q.device.type == "cpu" and _GQA_IN_SDPA:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                              enable_gqa=True)
    return F.scaled_dot_product_attention(q, repeat_kv(k, h), repeat_kv(v, h),
                                          attn_mask=attn_mask, is_causal=is_causal)


def causal(layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain causal self-attention over the T tokens of each row."""
    return sdpa(q, k, v, is_causal=True)


class DocumentAttention:
    """Causal attention restricted to each document of a packed row.

    `doc_ids` [B, T] numbers the documents of each row (any ints; equal ids = same document, and
    documents are contiguous). The mask is built once and shared by all layers.
    """

    def __init__(self, doc_ids: torch.Tensor) -> None:
        t = doc_ids.shape[-1]
        same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
        causal_mask = torch.ones(t, t, dtype=torch.bool, device=doc_ids.device).tril()
        self.mask = (same_doc & causal_mask)[:, None]  # [B, 1, T, T]

    def __call__(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor) -> torch.Tensor:
        return sdpa(q, k, v, attn_mask=self.mask)


def doc_ids_from_positions(positions: torch.Tensor) -> torch.Tensor:
    """Document numbers from positions that restart at 0 at each document start ([B, T])."""
    return (positions == 0).long().cumsum(-1)


class KVCache:
    """A contiguous per-layer KV cache for the reference generation loop (rows share one length)."""

    def __init__(self, *, num_layers: int, batch_size: int, num_kv_heads: int, head_dim: int,
                 max_seq_len: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        shape = (batch_size, num_kv_heads, max_seq_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.max_seq_len = max_seq_len

    def at(self, start: int) -> _CachedAttention:
        """The backend for a forward pass whose first new token sits at position `start`."""
        return _CachedAttention(self, start)


class _CachedAttention:
    def __init__(self, cache: KVCache, start: int) -> None:
        self.cache, self.start = cache, start

    def __call__(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor) -> torch.Tensor:
        start, t = self.start, q.shape[2]
        end = start + t
        if end > self.cache.max_seq_len:
            raise ValueError(f"KV cache holds {self.cache.max_seq_len} tokens, asked for {end}")
        self.cache.k[layer_idx][:, :, start:end] = k
        self.cache.v[layer_idx][:, :, start:end] = v
        keys, values = self.cache.k[layer_idx][:, :, :end], self.cache.v[layer_idx][:, :, :end]
        if t == 1:
            return sdpa(q, keys, values)
        # new token i (absolute position start + i) sees cached positions 0 .. start + i
        mask = torch.ones(t, end, dtype=torch.bool, device=q.device).tril(diagonal=start)
        return sdpa(q, keys, values, attn_mask=mask)
