"""Training metrics: a JSONL log, a rich progress bar, and the loss-curve PNG."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends one JSON object per line; `records` keeps them for the curve and the summary."""

    def __init__(self, path: Path, *, resume: bool = False) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if resume and path.exists():
            self.records = [json.loads(line) for line in path.read_text().splitlines() if line]
        elif path.exists():
            path.unlink()

    def log(self, **record: Any) -> None:
        self.records.append(record)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (a resumed run rewrites them)."""
        self.records = [r for r in self.records if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))


def plot_losses(records: list[dict[str, Any]], path: Path, *, title: str) -> Path | None:
    """Train and validation loss against step as a PNG; None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def train_flops_per_token(cfg, seq_len: int) -> float:
    """Forward+backward FLOPs per token: 6 x matmul parameters (incl. the LM head) + causal
    attention (6 x layers x heads x head_dim x seq_len: scores and values, halved by causality)."""
    matmul_params = cfg.num_params(embeddings=False) + cfg.vocab_size * cfg.hidden_size
    attention = 6 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq_len
    return 6 * matmul_params + attention


def matmul_peak(device, dtype, *, n: int | None = None, repeats: int = 3) -> float:
    """Sustained FLOP/s of a square GEMM in `dtype` on `device`, measured now (the MFU base):
    the faster of PyTorch's product and, for fp32 on the CPU, oneDNN's (what the model's
    linear layers use there, `fullchain.model.linear`)."""
    import time

    import torch

    from fullchain.model.linear import matmul_t
    if n is None:  # CPUs without bf16 units run bf16 GEMMs ~500x slower: keep the probe short
        n = 4096 if device.type == "cuda" else 2048 if dtype == torch.float32 else 256
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    products = [lambda: a @ b]
    if device.type == "cpu" and dtype == torch.float32:
        products.append(lambda: matmul_t(a, b))  # oneDNN where it applies: a @ b.T
    best = float("inf")
    for product in products:
        product()
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            product()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def tensorboard_writer(out: Path, *, enabled: bool):
    """A SummaryWriter in out/tensorboard, or None (disabled or tensorboard not installed)."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def log_tensorboard(writer, record: dict[str, Any]) -> None:
    if writer is None:
        return
    for key, value in record.items():
        if key != "step" and isinstance(value, (int, float)):
            writer.add_scalar(f"train/{key}" if key != "val_loss" else "val/loss", value,
                              record["step"])
    writer.flush()


class _Bar:
    def __init__(self, progress, task) -> None:
        self.progress, self.task = progress, task

    def update(self, completed: int, info: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, info=info)


@contextmanager
def progress_bar(*, enabled: bool, total: int, start: int):
    """A rich progress bar on stderr (rank 0 only); `update(completed, info)`."""
    if not enabled:
        yield _Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    columns = [TextColumn("pretrain"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield _Bar(progress, progress.add_task("steps", total=total, completed=start, info=""))
