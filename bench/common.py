"""Shared helpers for the benchmarks: timing, the matmul ceiling, model FLOPs, tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from fullchain.train.metrics import matmul_peak, train_flops_per_token  # noqa: F401


def matmul_ceiling(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Sustained FLOP/s of a square GEMM of size n in `dtype` on this CPU, measured now."""
    return matmul_peak(torch.device("cpu"), dtype, n=n, repeats=repeats)


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of fn takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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


def spread(values: list[float], fmt: str) -> str:
    """'median (rounds: a, b, c)' for more than one round, else the value."""
    if len(values) == 1:
        return format(values[0], fmt)
    rounds = ", ".join(format(v, fmt) for v in values)
    return f"{format(statistics.median(values), fmt)} (rounds: {rounds})"


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=title)
    for h in header:
        table.add_column(h)
    for r in rows:
        table.add_row(*[str(c) for c in r])
    Console(width=max(Console().width, 140)).print(table)  # logs are not 80 columns
