"""Shared helpers for the benchmarks: timing, the matmul ceiling, model FLOPs, tables."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def matmul_ceiling(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Sustained FLOP/s of a square GEMM of size n in `dtype` on this machine, measured now."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up (thread pool, packing buffers)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def train_flops_per_token(cfg, seq_len: int) -> float:
    """Forward+backward FLOPs per token: 6 x (matmul params incl. lm_head) + causal attention."""
    matmul_params = cfg.num_params(embeddings=False) + cfg.vocab_size * cfg.hidden_size
    attn = 6 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq_len
    return 6 * matmul_params + attn


def time_interleaved(fns: dict[str, Callable[[], None]], *, warmup: int, repeats: int) -> dict:
    """Median seconds per call of each fn, calls interleaved so drift in machine load hits all."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {k: sorted(v)[len(v) // 2] for k, v in samples.items()}


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=title)
    for h in header:
        table.add_column(h)
    for r in rows:
        table.add_row(*[str(c) for c in r])
    Console().print(table)
