"""LLM instruction synthesis, self-instruct style (Wang et al. 2023): seed tasks in, new
instruction/response pairs out, deduplicated, from any `fullchain.llm` model (a model folder on
the engine, or an OpenAI-compatible endpoint).

Each round shows the model ``examples_per_prompt`` tasks sampled from the pool and asks for one
new task as ``Instruction: ...`` / ``Response: ...``; a reply that does not parse, or whose
instruction is too close to one already in the pool (word-bigram Jaccard ≥ ``max_similarity``),
is counted and skipped. Kept pairs join the pool, so later rounds see them as examples.

Output: ``out`` (JSONL rows ``{"id", "instruction", "response", "meta"}``, where ``meta`` names
the model, the example tasks shown and the attempt) and ``<out>.meta.json`` beside it: the
counts and the lineage (seeds file and hash, the settings, the fullchain version, the seed).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fullchain.config import ConfigError, DataError
from fullchain.data.progress import Progress
from fullchain.data.text import words
from fullchain.formats._jsonl import atomic_write, iter_jsonl, write_jsonl
from fullchain.formats.lineage import make_lineage
from fullchain.llm import LLM, GenParams, load_llm

_PARSE = re.compile(r"Instruction:\s*(?P<i>.+?)\s*Response:\s*(?P<r>.+)", re.S | re.I)
FORMAT, VERSION = "fullchain.synth", 1


@dataclass(kw_only=True)
class SynthConfig:
    seeds: Path                   # JSONL rows with "instruction" and "response" (or "output")
    out: Path                     # JSONL of the new pairs; <out>.meta.json beside it
    llm: str                      # a model folder, or an OpenAI-compatible API root (http…/v1)
    model: str | None = None      # the model name at the URL (default: the server's first)
    api_key: str = ""
    num_new: int = 20
    examples_per_prompt: int = 3
    max_attempts: int = 100
    max_similarity: float = 0.7
    temperature: float = 1.0
    max_tokens: int = 512
    seed: int = 0
    dtype: str = "float32"        # a model folder's engine
    device: str = "auto"

    def __post_init__(self) -> None:
        self.seeds, self.out = Path(self.seeds), Path(self.out)
        checks = [("num_new", self.num_new >= 1, ">= 1"),
                  ("examples_per_prompt", self.examples_per_prompt >= 1, ">= 1"),
                  ("max_attempts", self.max_attempts >= 1, ">= 1"),
                  ("max_similarity", 0 < self.max_similarity <= 1, "in (0, 1]"),
                  ("temperature", self.temperature >= 0, ">= 0"),
                  ("max_tokens", self.max_tokens >= 1, ">= 1")]
        for key, ok, rule in checks:
            if not ok:
                raise ConfigError(f"synth '{key}' must be {rule}, got {getattr(self, key)!r}")


def read_seeds(path: Path) -> list[dict[str, Any]]:
    """``{"id", "instruction", "response"}`` per row; DataError names ``file:line`` for a row
    without string fields, and the file when it has no rows."""
    seeds = []
    for lineno, row in iter_jsonl(path):
        response = row.get("response", row.get("output"))
        if not isinstance(row.get("instruction"), str) or not isinstance(response, str):
            raise DataError(f"{path}:{lineno}: a seed needs string 'instruction' and 'response' "
                            f"(or Alpaca 'output'), got keys {sorted(row)}")
        seeds.append({"id": str(row.get("id", f"seed-{lineno}")),
                      "instruction": row["instruction"], "response": response})
    if not seeds:
        raise DataError(f"{path}: no seed rows; give JSONL rows with 'instruction' and 'response'")
    return seeds


def _bigrams(text: str) -> set[tuple[str, str]]:
    toks = words(text)
    return set(zip(toks, toks[1:])) or {(t, "") for t in toks}


def _too_similar(new: set, pool: list[set], limit: float) -> bool:
    return any(len(new & old) / max(1, len(new | old)) >= limit for old in pool)


def _prompt(examples: list[dict[str, Any]]) -> list[dict[str, str]]:
    shown = "\n\n".join(f"Instruction: {e['instruction']}\nResponse: {e['response']}"
                        for e in examples)
    return [{"role": "system", "content": "You write diverse, self-contained tasks for "
             "training an assistant, each with a correct answer."},
            {"role": "user", "content": f"Here are some tasks:\n\n{shown}\n\nWrite one new "
             "task that differs from these, in the same format:\nInstruction: ...\n"
             "Response: ..."}]


def synthesize(cfg: SynthConfig, *, llm: LLM | None = None,
               progress: bool = False) -> dict[str, Any]:
    """Generate up to ``num_new`` pairs into ``cfg.out`` (and its ``.meta.json``); return
    ``{"kept", "skipped": {reason: count}, "attempts"}``. `llm` None loads ``cfg.llm``."""
    seeds = read_seeds(cfg.seeds)
    llm = llm or load_llm(cfg.llm, model=cfg.model, api_key=cfg.api_key, dtype=cfg.dtype,
                          device=cfg.device)
    with Progress("synth", total=cfg.num_new, done=0, enabled=progress, unit="pairs") as bar:
        new, skipped, attempts = _generate(cfg, llm, seeds, bar)
    write_jsonl(cfg.out, new)
    summary = {"kept": len(new), "skipped": dict(skipped), "attempts": attempts}
    _write_meta(cfg, llm.model, summary)
    return summary


def _generate(cfg: SynthConfig, llm: LLM, seeds: list[dict[str, Any]],
              bar: Progress) -> tuple[list[dict[str, Any]], Counter, int]:
    rng = random.Random(cfg.seed)
    pool = list(seeds)
    grams = [_bigrams(s["instruction"]) for s in pool]
    new: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    attempts = 0
    while len(new) < cfg.num_new and attempts < cfg.max_attempts:
        shots = rng.sample(pool, min(cfg.examples_per_prompt, len(pool)))
        params = GenParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                           seed=cfg.seed + attempts)
        reply = llm.chat(_prompt(shots), params=params).text
        attempts += 1
        m = _PARSE.search(reply)
        if not m:
            skipped["unparsable"] += 1
            continue
        pair = {"id": f"synth-{len(new):05d}", "instruction": m["i"].strip(),
                "response": m["r"].strip()}
        g = _bigrams(pair["instruction"])
        if _too_similar(g, grams, cfg.max_similarity):
            skipped["duplicate"] += 1
            continue
        pool.append(pair)
        grams.append(g)
        new.append({**pair, "meta": {"source": "synth", "model": llm.model,
                                     "shots": [s["id"] for s in shots], "attempt": attempts}})
        bar.advance()
    return new, skipped, attempts


def meta_path(out: Path) -> Path:
    """Where the lineage of a synthesized file goes: ``<out>.meta.json``."""
    return out.with_name(out.name + ".meta.json")


def _write_meta(cfg: SynthConfig, model: str, summary: dict[str, Any]) -> None:
    config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()
              if k != "api_key"}  # a key is a secret, not lineage
    lineage = make_lineage(stage="synth", inputs=[cfg.seeds], config={**config, "model": model},
                           seed=cfg.seed)
    meta = {"format": FORMAT, "version": VERSION, "output": cfg.out.name, **summary,
            "lineage": lineage}
    with atomic_write(meta_path(cfg.out)) as f:
        f.write(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
