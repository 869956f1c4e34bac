"""Rotary position embeddings with the scaling variants of HF's `modeling_rope_utils`.

`inv_freq(cfg, seq_len)` returns the inverse frequencies and the cos/sin scale for a forward pass
whose largest position is `seq_len - 1`; only dynamic NTK depends on `seq_len` (HF semantics:
frequencies are recomputed once the sequence outgrows `max_position_embeddings`).
"""

from __future__ import annotations

import math

import torch

from fullchain.model.config import ModelConfig


def _base_inv_freq(theta: float, dim: int) -> torch.Tensor:
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (theta ** exponents)


def _linear(cfg: ModelConfig, dim: int, seq_len: int) -> tuple[torch.Tensor, float]:
    return _base_inv_freq(cfg.rope_theta, dim) / cfg.rope_scaling["factor"], 1.0


def _dynamic(cfg: ModelConfig, dim: int, seq_len: int) -> tuple[torch.Tensor, float]:
    factor, max_pos = cfg.rope_scaling["factor"], cfg.max_position_embeddings
    seq_len = max(seq_len, max_pos)
    base = cfg.rope_theta * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    return _base_inv_freq(base, dim), 1.0


def _llama3(cfg: ModelConfig, dim: int, seq_len: int) -> tuple[torch.Tensor, float]:
    s = cfg.rope_scaling
    inv_freq = _base_inv_freq(cfg.rope_theta, dim)
    old_len, factor = s["original_max_position_embeddings"], s["factor"]
    low_wavelen = old_len / s["low_freq_factor"]
    high_wavelen = old_len / s["high_freq_factor"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    low, high = s["low_freq_factor"], s["high_freq_factor"]
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, scaled), 1.0


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn(cfg: ModelConfig, dim: int, seq_len: int) -> tuple[torch.Tensor, float]:
    s, base = cfg.rope_scaling, cfg.rope_theta
    orig = s.get("original_max_position_embeddings") or cfg.max_position_embeddings
    factor = s.get("factor") or cfg.max_position_embeddings / orig
    attention_factor = s.get("attention_factor")
    if attention_factor is None:
        if s.get("mscale") and s.get("mscale_all_dim"):
            attention_factor = _yarn_mscale(factor, s["mscale"]) / _yarn_mscale(
                factor, s["mscale_all_dim"])
        else:
            attention_factor = _yarn_mscale(factor)
    beta_fast, beta_slow = s.get("beta_fast") or 32, s.get("beta_slow") or 1

    def correction_dim(num_rotations: float) -> float:
        return (dim * math.log(orig / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    inv = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv, float(attention_factor)


_ROPE_FNS = {"linear": _linear, "dynamic": _dynamic, "llama3": _llama3, "yarn": _yarn}


def inv_freq(cfg: ModelConfig, seq_len: int = 0) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [head_dim/2] (fp32, CPU) and the attention scale applied to cos/sin."""
    if cfg.rope_scaling is None:
        return _base_inv_freq(cfg.rope_theta, cfg.head_dim), 1.0
    return _ROPE_FNS[cfg.rope_type](cfg, cfg.head_dim, seq_len)


class RotaryEmbedding(torch.nn.Module):
    """Computes cos/sin [B, T, head_dim] for given positions, in fp32, then casts like HF."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        freq, self.scale = inv_freq(cfg)
        self.register_buffer("inv_freq", freq, persistent=False)

    def forward(self, positions: torch.Tensor,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freq, scale = self.inv_freq, self.scale
        if self.cfg.rope_type == "dynamic":
            seq_len = int(positions.max()) + 1
            if seq_len > self.cfg.max_position_embeddings:
                freq, scale = inv_freq(self.cfg, seq_len)
                freq = freq.to(positions.device)
        angles = positions[..., None].float() * freq.float()  # [B, T, D/2]
        emb = torch.cat((angles, angles), dim=-1)
        return (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, D]; cos/sin [B, T, D] in HF's rotate_half layout."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
