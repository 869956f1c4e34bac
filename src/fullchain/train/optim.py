"""AdamW with weight-decay groups, and learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: not norms, biases or embeddings (a tied head follows the embedding)."""
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim < 2 or "embed_tokens" in name or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float,
                    betas: tuple[float, float], eps: float = 1e-8) -> torch.optim.AdamW:
    # foreach on CPU; fused where the device supports it (CUDA), which is the fastest path there
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps,
                             fused=fused or None, foreach=None if fused else True)


def lr_at(step: int, *, max_steps: int, lr: float, warmup_steps: int, min_lr_ratio: float,
          schedule: str, decay_fraction: float = 0.2) -> float:
    """Learning rate for optimizer step `step` (0-based).

    cosine: linear warmup, then cosine from lr to lr*min_lr_ratio at max_steps.
    wsd: linear warmup, constant, then linear decay over the last `decay_fraction` of the steps.
    """
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    floor = lr * min_lr_ratio
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "wsd":
        decay_start = int(max_steps * (1 - decay_fraction))
        if step < decay_start:
            return lr
        progress = (step - decay_start) / max(1, max_steps - decay_start)
        return lr + (floor - lr) * min(1.0, progress)
    if schedule == "constant":
        return lr
    raise ValueError(f"unknown schedule {schedule!r}")
