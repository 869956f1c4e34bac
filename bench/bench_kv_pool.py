"""The engine's KV pool dtypes at long contexts: decode steps of 16 sequences whose long prompts
are cached (where the attention over the pool takes most of a step), fp32 / bf16 / int8 pools
alternating in rounds on the same weights, and what each pool holds per GB.

    .venv/bin/python bench/bench_kv_pool.py [--model smollm2-135m] [--prompt 1024]
        [--sequences 16] [--output 64] [--rounds 3] [--pools float32,bfloat16,int8]

With `--quality MODEL_DIR --tokens TOKENS_DIR` (a trained checkpoint, e.g. the demo's
`model_long`, and a token directory with a `val` shard, the demo's `tokens`) it measures what
each pool costs in accuracy instead: the log-probs of held-out text of `--prompt` tokens,
teacher-forced in prompt chunks of 64 tokens (every chunk after the first reads the earlier
keys and values from the pool), and greedy continuations of 64 tokens (the decode path), each
against the first pool listed.

Ratios are taken within each round against the first pool listed; medians with every round.
Printed, not asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_engine import decode_steps  # noqa: E402
from common import print_table, spread  # noqa: E402

from fullchain.engine import Engine, EngineConfig, SamplingParams  # noqa: E402
from fullchain.engine.runner import ModelRunner  # noqa: E402
from fullchain.formats.tokens import TokenDataset  # noqa: E402
from fullchain.model import Transformer, preset  # noqa: E402


def quality(model_dir: str, tokens_dir: str, pools: list[str], length: int,
            texts: int) -> None:
    """Held-out log-probs and greedy continuations of a trained model, by pool dtype."""
    val = TokenDataset(tokens_dir, "val").tokens
    chunks = [np.asarray(val[i * length:(i + 1) * length], dtype=np.int64).tolist()
              for i in range(min(texts, val.size // length))]
    if not chunks:
        raise SystemExit(f"{tokens_dir}: the val shard has fewer than {length} tokens")
    logprobs, greedy = {}, {}
    for pool in pools:
        engine = Engine.from_pretrained(model_dir, EngineConfig(kv_cache_dtype=pool,
                                                                max_num_batched_tokens=64))
        outs = engine.generate(chunks, SamplingParams(max_tokens=1, prompt_logprobs=0))
        logprobs[pool] = np.array([lp[0] for o in outs for lp in o.prompt_logprobs[1:]])
        outs = engine.generate([c[:length - 64] for c in chunks],
                               SamplingParams(max_tokens=64, ignore_eos=True))
        greedy[pool] = [o.outputs[0].token_ids for o in outs]
        print(f"{pool} pool: mean log-prob {logprobs[pool].mean():.4f}", flush=True)
    base, rows = pools[0], []
    for pool in pools:
        diff = np.abs(logprobs[pool] - logprobs[base])
        same = sum(a == b for x, y in zip(greedy[pool], greedy[base]) for a, b in zip(x, y))
        rows.append([pool, f"{float(np.exp(-logprobs[pool].mean())):.3f}",
                     f"{diff.mean():.5f} / {diff.max():.4f}",
                     f"{same} of {sum(len(g) for g in greedy[base])}"])
    print_table(f"{len(chunks)} held-out texts of {length} tokens, {model_dir}",
                ["KV pool", "perplexity", f"|log-prob - {base}'s| mean / max",
                 f"greedy tokens equal to {base}'s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompt", type=int, default=1024)
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--output", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pools", default="float32,bfloat16,int8")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: default)")
    parser.add_argument("--quality", metavar="MODEL_DIR",
                        help="a trained checkpoint: measure accuracy instead of speed")
    parser.add_argument("--tokens", metavar="TOKENS_DIR", help="held-out text (its val shard)")
    parser.add_argument("--texts", type=int, default=12, help="held-out texts (--quality)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.quality:
        if not args.tokens:
            parser.error("--quality needs --tokens (a token directory with a val shard)")
        quality(args.quality, args.tokens, args.pools.split(","), args.prompt, args.texts)
        return
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
                                            pool)["engine"])
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
