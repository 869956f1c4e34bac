"""Training throughput and peak memory: fullchain's trainer step vs transformers'
LlamaForCausalLM with the same AdamW, clipping, batch and dtype; MFU against the matmul ceiling
of that dtype, measured in the same process just before the steps. Each measurement runs in a
fresh process (clean peak RSS), in `--rounds` rounds that alternate the implementations: this
VM's speed moves by ±20% from minute to minute (one run of each gave ratios of 0.84x and 1.26x
on the tiny shape an hour apart), so medians are printed with every round's figure, and the
ratio is taken within each round.

    .venv/bin/python bench/bench_train.py [--only tiny|135m] [--steps N] [--dtypes float32,bfloat16]
        [--same-allocator] [--rounds 3]

fullchain runs as `fullchain pretrain` does, with glibc keeping freed memory
(`fullchain.model.memory.keep_freed_memory`) and its heap in huge pages
(`fullchain.cli.huge_page_heap_env`); `--same-allocator` adds transformers under those
settings too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {"tiny": ("tiny", 16, 256), "135m": ("smollm2-135m", 4, 512)}


def worker(impl: str, shape: str, dtype_name: str, steps: int) -> dict:
    import torch
    import transformers
    from common import matmul_ceiling

    from fullchain.checkpoint import config_to_hf
    from fullchain.model import Transformer, causal, preset
    from fullchain.model.memory import keep_freed_memory
    from fullchain.train.optim import build_optimizer
    from fullchain.train.parallel import World, grad_norm_clip, wrap
    torch.manual_seed(0)
    name, batch, seq = SHAPES[shape]
    cfg = preset(name)
    dtype = getattr(torch, dtype_name)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    positions = torch.arange(seq).expand(batch, -1)
    if impl != "transformers":  # what `fullchain pretrain` does on the CPU
        keep_freed_memory()
    if impl == "fullchain":
        model = Transformer(cfg)
        model.init_weights(seed=0)
        module = wrap(model, strategy="none", world=World())

        def loss_fn():
            return module(ids, torch.roll(ids, -1, 1), positions, causal)
    else:
        hf_cfg = transformers.AutoConfig.for_model(**config_to_hf(cfg))
        hf_cfg._attn_implementation = "sdpa"
        module = transformers.AutoModelForCausalLM.from_config(hf_cfg)

        def loss_fn():
            return module(input_ids=ids, labels=ids).loss
    opt = build_optimizer(module, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95))
    times = []
    for _ in range(steps + 1):  # the first step warms up (allocations, optimizer state)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_fn()
        loss.backward()
        grad_norm_clip(module, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    peak_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text()
                   .splitlines() if line.startswith("VmHWM"))
    step_s = sorted(times[1:])[len(times[1:]) // 2]
    ceiling = matmul_ceiling(dtype, repeats=3)  # in this process, right after the steps
    return {"tokens_per_s": batch * seq / step_s, "peak_rss_mb": peak_kb / 1024,
            "params": sum(p.numel() for p in module.parameters()), "ceiling": ceiling}


def measure(impl: str, shape: str, dtype: str, steps: int) -> dict:
    from fullchain.cli import huge_page_heap_env
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if impl != "transformers":  # the heap in huge pages, as the `fullchain` command has it
        env = huge_page_heap_env(env) or env
    out = subprocess.run([sys.executable, __file__, "--worker", impl, shape, dtype, str(steps)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=list(SHAPES))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--same-allocator", action="store_true",
                        help="also time transformers with fullchain's allocator settings "
                             "(keep_freed_memory, the heap in huge pages)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of fresh processes; medians are printed")
    parser.add_argument("--worker", nargs=4)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    if args.worker:
        impl, shape, dtype, steps = args.worker
        print(json.dumps(worker(impl, shape, dtype, int(steps))))
        return
    import torch
    from common import print_table, spread
    from rich.progress import track

    from fullchain.model import preset
    from fullchain.train.metrics import train_flops_per_token
    rows = []
    impls = ["fullchain", "transformers"] + (
        ["transformers+allocator"] if args.same_allocator else [])
    runs = [(shape, dtype, r) for shape in ([args.only] if args.only else list(SHAPES))
            for dtype in args.dtypes.split(",") for r in range(args.rounds)]
    results: dict[tuple[str, str], list[dict]] = {}
    for shape, dtype, r in track(runs, description="rounds"):
        steps = args.steps if shape == "tiny" else max(2, args.steps // 2)
        order = impls if r % 2 == 0 else impls[::-1]  # neither always runs first
        results.setdefault((shape, dtype), []).append(
            {impl: measure(impl, shape, dtype, steps) for impl in order})
    for (shape, dtype), rounds in results.items():
        name, batch, seq = SHAPES[shape]
        flops = train_flops_per_token(preset(name), seq)
        for impl in impls:
            rate = [rd[impl]["tokens_per_s"] for rd in rounds]
            mfu = [rd[impl]["tokens_per_s"] * flops / rd[impl]["ceiling"] for rd in rounds]
            rows.append([shape, dtype, impl, f"{batch}x{seq}", spread(rate, ",.0f"),
                         spread(mfu, ".0%"),
                         f"{max(rd[impl]['peak_rss_mb'] for rd in rounds):,.0f}"])
        ratio = [rd["fullchain"]["tokens_per_s"] / rd["transformers"]["tokens_per_s"]
                 for rd in rounds]
        ceiling = [rd[i]["ceiling"] / 1e9 for rd in rounds for i in impls]
        rows.append([shape, dtype, "ratio (per round)", "", spread(ratio, ".2f") + "x",
                     f"ceilings {min(ceiling):.0f}-{max(ceiling):.0f} GFLOP/s", ""])
    print_table(f"training step (AdamW, clip 1.0), {torch.get_num_threads()} threads, "
                f"{args.rounds} rounds", ["model", "dtype", "implementation", "batch",
                                          "tokens/s", "MFU", "peak RSS MB"], rows)


if __name__ == "__main__":
    main()
