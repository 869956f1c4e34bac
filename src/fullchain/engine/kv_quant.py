"""The int8 KV pool: each key (or value) of a kv head is stored as D int8 values and its scale.

A row of an int8 pool is D + 4 bytes: the values rounded to q = round(x / s) with
s = max|x| / 127 (symmetric, one scale per token and kv head, as LMDeploy's int8 KV cache keeps
one per token and head), then s itself as the row's last four bytes (an fp32). A new token's
keys are quantised on their own when written, so a row never changes once written and the
blocks stay shareable by prefix. The decode kernels (`paged_attention.cpp`, `write_kv`) read
and write the same layout with the same arithmetic: x / s in fp32, rounded half to even.
"""

from __future__ import annotations

import torch

SCALE_BYTES = 4  # the fp32 scale at the end of each row


def pool_dim(head_dim: int, dtype: torch.dtype) -> int:
    """The last dimension of a pool of `dtype`: D, or D + 4 int8 bytes for an int8 pool."""
    return head_dim + SCALE_BYTES if dtype == torch.int8 else head_dim


def row_bytes(head_dim: int, dtype: torch.dtype) -> int:
    """The bytes one key (or value) of one kv head takes in a pool of `dtype`."""
    return pool_dim(head_dim, dtype) * dtype.itemsize


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[..., D] floats -> [..., D + 4] int8 rows (the values, then the scale's bytes)."""
    x = x.float()
    scale = x.abs().amax(-1, keepdim=True) / 127  # [..., 1]
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # a zero row stays zero
    q = torch.round(x / safe).clamp_(-127, 127).to(torch.int8)
    return torch.cat([q, scale.contiguous().view(torch.int8)], dim=-1)


def dequantize(rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[..., D + 4] int8 rows -> [..., D] values in `dtype` (value * its row's scale)."""
    scale = rows[..., -SCALE_BYTES:].contiguous().view(torch.float32)  # [..., 1]
    return (rows[..., :-SCALE_BYTES].float() * scale).to(dtype)


def to_pool(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """New keys or values [..., D] as a pool of `dtype` stores them."""
    return quantize(x) if dtype == torch.int8 else x.to(dtype)


def from_pool(rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Rows read from a pool, as values of `dtype`."""
    return dequantize(rows, dtype) if rows.dtype == torch.int8 else rows.to(dtype)
