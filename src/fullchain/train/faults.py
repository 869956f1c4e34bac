"""Graceful stops: SIGTERM or SIGINT finish the current step, save a checkpoint, then exit."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


class StopFlag:
    def __init__(self) -> None:
        self.signal_name: str | None = None

    def agreed(self, world) -> bool:
        """True on every rank once any rank was signalled (ranks must stop at the same step)."""
        local = self.signal_name is not None
        if not world.distributed:
            return local
        flag = torch.tensor([int(local)], device="cuda" if world.device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.signal_name is None:
            self.signal_name = "a signal to another rank"
        return bool(flag.item())


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    flag = StopFlag()

    def handler(signum, frame) -> None:
        flag.signal_name = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
