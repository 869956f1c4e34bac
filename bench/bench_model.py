"""Forward+backward tokens/s: fullchain vs transformers' LlamaForCausalLM, same weights, batch,
dtype and process; and the share of the fp32 matmul ceiling measured in the same run.

    .venv/bin/python bench/bench_model.py [--only tiny|135m] [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import matmul_ceiling, print_table, time_interleaved, train_flops_per_token  # noqa: E402

from fullchain.checkpoint import config_to_hf  # noqa: E402
from fullchain.model import Transformer, preset  # noqa: E402
from fullchain.train.loss import linear_cross_entropy  # noqa: E402

SHAPES = {"tiny": ("tiny", 16, 256), "135m": ("smollm2-135m", 4, 512)}


def step_fn(model, ids, *, hf: bool):
    """One forward+backward as each library trains: transformers' `labels=` loss, fullchain's
    trainer loss (the LM head fused with cross-entropy)."""
    targets = torch.roll(ids, -1, dims=1)

    def step():
        if hf:
            loss = model(input_ids=ids, labels=ids).loss
        else:
            loss = linear_cross_entropy(model(ids, return_hidden=True), model.lm_head.weight,
                                        targets)
        loss.backward()
        model.zero_grad(set_to_none=True)
    return step


def bench(name: str, repeats: int) -> list:
    import transformers
    preset_name, batch, seq = SHAPES[name]
    cfg = preset(preset_name)
    ours = Transformer(cfg)
    ours.init_weights(seed=0)
    hf_cfg = transformers.AutoConfig.for_model(**config_to_hf(cfg))
    hf_cfg._attn_implementation = "sdpa"
    theirs = transformers.AutoModelForCausalLM.from_config(hf_cfg)
    theirs.load_state_dict(ours.state_dict(), strict=False)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    times = time_interleaved({"fullchain": step_fn(ours.train(), ids, hf=False),
                              "transformers": step_fn(theirs.train(), ids, hf=True)},
                             warmup=1, repeats=repeats)
    ceiling = matmul_ceiling(torch.float32)
    flops = train_flops_per_token(cfg, seq)
    tokens = batch * seq
    rows = []
    for impl, sec in times.items():
        tps = tokens / sec
        rows.append([name, impl, f"{batch}x{seq}", f"{tps:,.0f}",
                     f"{100 * tps * flops / ceiling:.0f}%"])
    ratio = times["transformers"] / times["fullchain"]
    rows.append([name, "ratio fullchain/transformers", "", f"{ratio:.2f}x",
                 f"ceiling {ceiling / 1e9:.0f} GFLOP/s"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in [args.only] if args.only else list(SHAPES):
        rows += bench(name, args.repeats if name == "tiny" else max(2, args.repeats // 2))
    print_table(f"forward+backward, fp32, {torch.get_num_threads()} threads",
                ["model", "implementation", "batch", "tokens/s", "of matmul ceiling"], rows)


if __name__ == "__main__":
    main()
