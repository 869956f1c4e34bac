"""Process groups and model wrapping: one process, DDP, or FSDP2 (`fully_shard`), all from PyTorch.

Launch with `torchrun --nproc_per_node N -m fullchain pretrain ...` (gloo on CPU, NCCL on CUDA;
multi-node through torchrun's rendezvous). Everything here wraps the model from outside, so the
model code stays single-device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from fullchain.model import Attention, Transformer
from fullchain.train.loss import linear_cross_entropy


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device: str) -> World:
    """Join the torchrun process group when launched by torchrun; pick this rank's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return World(rank=rank, size=size, local_rank=local_rank, device=dev)


class LossModel(nn.Module):
    """The transformer plus its LM-head cross-entropy, so DDP/FSDP see the whole step in forward."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor,
                attention: Attention) -> torch.Tensor:
        hidden = self.model(ids, positions=positions, attention=attention, return_hidden=True)
        return linear_cross_entropy(hidden, self.model.lm_head.weight, targets)


def wrap(model: Transformer, *, strategy: str, world: World,
         activation_checkpointing: bool = False, compile: bool = False) -> nn.Module:
    """LossModel around `model`, with activation checkpointing, torch.compile and DDP/FSDP2."""
    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            apply_activation_checkpointing,
        )

        from fullchain.model.transformer import DecoderLayer
        apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, DecoderLayer))
    if compile:
        for layer in model.model.layers:
            layer.compile()
    loss_model = LossModel(model)
    if strategy == "auto":
        strategy = "fsdp" if world.distributed else "none"
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(loss_model)
    elif strategy == "ddp" and world.distributed:
        from torch.nn.parallel import DistributedDataParallel
        ids = [world.device.index] if world.device.type == "cuda" else None
        loss_model = DistributedDataParallel(loss_model, device_ids=ids)
    return loss_model


def mean_across(value: float, world: World) -> float:
    """The mean of a per-rank scalar over all ranks (the value itself in one process)."""
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64,
                     device=world.device if world.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / world.size


def grad_norm_clip(module: nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm (DTensor-aware for FSDP2) and return it as a float."""
    norm = torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.grad is not None],
                                          max_norm)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
