"""The engine's CPU decode kernels vs PyTorch's operators, in one process:

- one token's linear products of a model's layers (batch 1): read bandwidth of each against a
  plain read of the same bytes;
- the same products and the LM head for a batched decode step (`--batch` rows): PyTorch's
  products (x W^T, and W x^T, which PyTorch runs faster with few rows) vs the engine's kernel
  (register tiles beyond 8 rows), against a 2048² fp32 GEMM timed in the same run;
- decode attention of `--batch` sequences of `--context` keys over the paged pool, all layers:
  gathering the blocks and PyTorch's attention (the engine without the kernels) vs the kernel.

    .venv/bin/python bench/bench_kernels.py [--model smollm2-135m] [--threads 2]
        [--batch 32] [--context 272]
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

from fullchain.engine import kernels  # noqa: E402
from fullchain.engine.runner import BatchMetadata, PagedAttention  # noqa: E402
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
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--context", type=int, default=272)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not kernels.load():
        sys.exit("the decode kernels could not be built here")
    cfg = preset(args.model)
    c, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    shapes = [(c, cfg.num_attention_heads * d), (c, cfg.num_key_value_heads * d),
              (c, cfg.num_key_value_heads * d), (cfg.num_attention_heads * d, c), (c, i), (c, i),
              (i, c)]  # q, k, v, o, gate, up, down: (in, out)
    single_token(args, cfg, shapes)
    batched_products(args, cfg, shapes)
    decode_attention(args, cfg)


def single_token(args, cfg, shapes) -> None:
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


def batched_products(args, cfg, shapes) -> None:
    """A batched decode step's products (the layers' and the LM head): PyTorch's (fp32 x W^T
    and W x^T; bf16 emulated on CPUs without bf16 units) vs the engine's kernel, with the fp32
    GEMM ceiling of this machine measured in the same run."""
    kernel = lambda x, w: torch.ops.fullchain.gemv(w, x)  # noqa: E731
    runs = {torch.float32: {"F.linear (x W^T)": lambda x, w: F.linear(x, w),
                            "W x^T (PyTorch, a transposed view)":
                                lambda x, w: torch.mm(w, x.t()).t(),
                            "engine (decode kernel)": kernel},
            torch.bfloat16: {"F.linear": lambda x, w: F.linear(x.to(w.dtype), w),
                             "engine (decode kernel)": kernel}}
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    ceiling = 2 * 2048 ** 3 / best_seconds(lambda: a @ b, repeats=3, inner=2)
    rows = [["float32", "2048² GEMM (the ceiling)", "", f"{ceiling / 1e9:.0f}", ""]]
    for dtype, fns in runs.items():
        layers = [[torch.randn(o, n).to(dtype) for n, o in shapes]
                  for _ in range(cfg.num_hidden_layers)]
        layers.append([torch.randn(cfg.vocab_size, cfg.hidden_size).to(dtype)])  # LM head
        inputs = {n: torch.randn(args.batch, n) for n, _ in shapes}
        flops = 2 * args.batch * sum(w.numel() for ws in layers for w in ws)
        times = {name: best_seconds(lambda fn=fn, layers=layers, inputs=inputs:
                                    [fn(inputs[w.shape[1]], w) for ws in layers for w in ws],
                                    repeats=3, inner=2)
                 for name, fn in fns.items()}
        base = next(iter(times.values()))
        rows += [["" if i else str(dtype).removeprefix("torch."), name, f"{t * 1e3:.1f} ms",
                  f"{flops / t / 1e9:.0f} ({flops / t / ceiling:.0%})", f"{base / t:.2f}x"]
                 for i, (name, t) in enumerate(times.items())]
    print_table(f"a batched decode step's products (layers and LM head), {args.batch} rows, "
                f"{torch.get_num_threads()} threads",
                ["dtype", "products", "time", "GFLOP/s (of the ceiling)", "speed-up"], rows)


def decode_attention(args, cfg) -> None:
    """All layers' decode attention of `batch` sequences of `context` keys in a paged pool: one
    layer's pool, timed and multiplied by the layers (a 135M model's pool at 32 x 272 keys, 26
    MB, may sit partly in the last-level cache, which favours both sides alike)."""
    block, heads, kv, d = 16, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    per_seq = -(-args.context // block)
    num_blocks = 2 * args.batch * per_seq  # the sequences' blocks scattered over a larger pool
    pool = [torch.randn(kv, num_blocks, block, d) for _ in range(2)]
    tables = torch.randperm(num_blocks)[: args.batch * per_seq].view(args.batch, per_seq)
    lens = torch.full((args.batch,), args.context)
    q = torch.randn(1, heads, args.batch, d)
    new = torch.randn(1, kv, args.batch, d)
    slots = tables[:, -1] * block + (args.context - 1) % block
    keys = torch.arange(per_seq * block)
    rows = []
    for kernel in (False, True):
        meta = BatchMetadata(slot_mapping=slots, block_size=block,
                             decode_rows=torch.arange(args.batch), decode_blocks=tables,
                             decode_lens=lens, decode_mask=(keys < args.context)[None, None, None],
                             prefills=[], kernel=kernel)
        attention = PagedAttention([pool[0]], [pool[1]], meta)
        seconds = best_seconds(lambda a=attention: a(0, q, new, new), repeats=3, inner=5)
        rows.append(seconds * cfg.num_hidden_layers)
    kv_bytes = 2 * args.batch * args.context * kv * d * 4 * cfg.num_hidden_layers
    print_table(f"decode attention, {args.batch} sequences x {args.context} keys, "
                f"{cfg.num_hidden_layers} layers, fp32 KV, {torch.get_num_threads()} threads",
                ["attention", "time per step", "KV read", "speed-up"],
                [[name, f"{t * 1e3:.1f} ms", f"{kv_bytes / t / 1e9:.1f} GB/s",
                  f"{rows[0] / t:.2f}x"]
                 for name, t in zip(("gather blocks + PyTorch attention", "kernel (in place)"),
                                    rows, strict=True)])


if __name__ == "__main__":
    main()
