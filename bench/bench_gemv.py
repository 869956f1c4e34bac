"""The decode kernel vs PyTorch's products: one token's linear products of a model's layers
(batch 1), read bandwidth of each against a plain read of the same bytes, in one process.

    .venv/bin/python bench/bench_gemv.py [--model smollm2-135m] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402

from fullchain.engine import gemv  # noqa: E402
from fullchain.model import preset  # noqa: E402


def best_seconds(fn, repeats: int = 5, inner: int = 10) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not gemv.load():
        sys.exit("the decode kernel could not be built here")
    cfg = preset(args.model)
    c, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    shapes = [(c, cfg.num_attention_heads * d), (c, cfg.num_key_value_heads * d),
              (c, cfg.num_key_value_heads * d), (cfg.num_attention_heads * d, c), (c, i), (c, i),
              (i, c)]  # q, k, v, o, gate, up, down: (in, out)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        layers = [[torch.randn(o, n).to(dtype) for n, o in shapes]
                  for _ in range(cfg.num_hidden_layers)]
        column_major = [[w.t().contiguous().t() for w in ws] for ws in layers]
        inputs = {n: torch.randn(1, 1, n).to(dtype) for n, _ in shapes}
        nbytes = sum(w.numel() * w.element_size() for ws in layers for w in ws)
        plain = torch.ones(nbytes // 4)

        def products(weights, fn, inputs=inputs):
            return lambda: [fn(inputs[w.shape[1]], w) for ws in weights for w in ws]

        runs = {"F.linear, row-major": products(layers, F.linear),
                "F.linear, column-major": products(column_major, F.linear),
                "decode kernel": products(layers, lambda x, w: torch.ops.fullchain.gemv(w, x))}
        if dtype == torch.bfloat16:  # PyTorch's column-major bf16 products take minutes
            runs.pop("F.linear, column-major")
        read = nbytes / best_seconds(plain.sum)
        rows.append([str(dtype).removeprefix("torch."), "plain read", "",
                     f"{read / 1e9:.1f} GB/s"])
        for name, fn in runs.items():
            seconds = best_seconds(fn)
            rows.append(["", name, f"{seconds * 1e3:.1f} ms",
                         f"{nbytes / seconds / 1e9:.1f} GB/s ({nbytes / seconds / read:.0%})"])
    print_table(f"one token's layer products, {args.model} ({cfg.num_hidden_layers} layers x 7), "
                f"{torch.get_num_threads()} threads", ["dtype", "products", "time", "bandwidth"],
                rows)


if __name__ == "__main__":
    main()
