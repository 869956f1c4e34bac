"""fp32 linear products on the CPU: PyTorch's default (MKL's sgemm behind `F.linear`) vs oneDNN's
product, which `fullchain.model.Linear` uses (see `fullchain/model/linear.py`).

The shapes are the tiny model's training products (16×256 tokens: forward and input gradient)
and the SmolLM2-135M shape's prompt products (2,048 tokens), plus a 2048² square. Calls are
interleaved in rounds so that drift in the machine's load hits both; the ratio is the median of
the rounds' ratios.

    .venv/bin/python bench/bench_gemm.py [--threads 2] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402

from fullchain.model import preset  # noqa: E402
from fullchain.model.linear import matmul_t, onednn_available  # noqa: E402


def shapes() -> list[tuple[str, int, int, int]]:
    """(what, rows, in, out) of x [rows, in] @ W[out, in].T"""
    tiny, small = preset("tiny"), preset("smollm2-135m")
    out = []
    for name, cfg, rows in (("tiny", tiny, 16 * 256), ("135M", small, 2048)):
        c, i = cfg.hidden_size, cfg.intermediate_size
        qd, kvd = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
        out += [(f"{name} q/o", rows, c, qd), (f"{name} k/v", rows, c, kvd),
                (f"{name} gate/up", rows, c, i), (f"{name} down", rows, i, c)]
        if name == "tiny":  # an input gradient: grad [rows, out] @ W [out, in], W read transposed
            out += [(f"{name} gate/up input grad", rows, i, c)]
    return out + [("square", 2048, 2048, 2048)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not onednn_available():
        sys.exit("this PyTorch build has no oneDNN linear product")
    rows = []
    for what, m, k, n in shapes():
        x = torch.randn(m, k)
        w = torch.randn(k, n).t() if "grad" in what else torch.randn(n, k)  # [n, k]
        flops = 2 * m * k * n
        inner = max(2, int(2e9 / flops))
        fns = {"mkl": lambda x=x, w=w: F.linear(x, w), "onednn": lambda x=x, w=w: matmul_t(x, w)}
        torch.testing.assert_close(fns["onednn"](), fns["mkl"](), rtol=1e-4, atol=1e-3)
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                start = time.perf_counter()
                for _ in range(inner):
                    fn()
                times[name].append((time.perf_counter() - start) / inner)
        ratio = statistics.median(a / b for a, b in zip(times["mkl"], times["onednn"]))
        rows.append([what, f"{m}×{k}→{n}", f"{flops / min(times['mkl']) / 1e9:.0f}",
                     f"{flops / min(times['onednn']) / 1e9:.0f}", f"{ratio:.2f}×"])
        print(*rows[-1], sep="  ", flush=True)
    print_table(f"fp32 linear products, {args.threads} threads (best of {args.rounds} rounds)",
                ["product", "shape", "MKL GFLOP/s", "oneDNN GFLOP/s",
                 "oneDNN vs MKL (median of rounds)"], rows)


if __name__ == "__main__":
    main()
