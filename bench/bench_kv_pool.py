"""The engine's KV pool dtypes at long contexts: decode steps of 16 sequences whose long prompts
are cached (where the attention over the pool takes most of a step), fp32 / bf16 / int8 pools
alternating in rounds on the same weights, and what each pool holds per GB.

    .venv/bin/python bench/bench_kv_pool.py [--model smollm2-135m] [--prompt 1024]
        [--sequences 16] [--output 64] [--rounds 3] [--pools float32,bfloat16,int8]

Ratios are taken within each round against the first pool listed; medians with every round.
Printed, not asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_engine import decode_steps  # noqa: E402
from common import print_table, spread  # noqa: E402

from fullchain.engine.runner import ModelRunner  # noqa: E402
from fullchain.model import Transformer, preset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompt", type=int, default=1024)
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--output", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pools", default="float32,bfloat16,int8")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Transformer(preset(args.model))
    model.init_weights(seed=0)
    model.eval()
    cfg, vocab = model.config, model.config.vocab_size
    prompt = min(args.prompt, cfg.max_position_embeddings - args.output - 1)
    pools = args.pools.split(",")
    rates: dict[str, list[float]] = {p: [] for p in pools}
    for r in range(args.rounds):
        for pool in pools:
            rates[pool].append(decode_steps(model, vocab, args.sequences, prompt, args.output,
                                            pool))
            print(f"round {r + 1}: {pool} pool {rates[pool][-1]:.1f} tokens/s", flush=True)
    rows = []
    for pool in pools:
        per_token = ModelRunner.kv_bytes_per_block(cfg, 16, getattr(torch, pool)) / 16
        ratios = [a / b for a, b in zip(rates[pool], rates[pools[0]])]
        rows.append([pool, f"{spread(rates[pool], '.1f')}",
                     f"{statistics.median(ratios):.2f}x ({', '.join(f'{x:.2f}' for x in ratios)})",
                     f"{per_token / 1e3:.1f} KB", f"{2**30 / per_token / prompt:,.0f}"])
    print_table(f"{args.sequences} sequences, decode steps only, {prompt}-token prompts cached, "
                f"{args.model}, {torch.get_num_threads()} threads",
                ["KV pool", "tokens/s", f"vs {pools[0]} (per round)", "pool per token",
                 f"{prompt}-token sequences per GB"], rows)


if __name__ == "__main__":
    main()
