"""Training metrics: a JSONL log, a rich progress bar, and the loss-curve PNG."""

from __future__ import annotations

import json
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
