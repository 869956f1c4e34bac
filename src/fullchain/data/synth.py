"""LLM instruction synthesis, self-instruct style (Wang et al. 2023): seed tasks in, new
instruction/response pairs out, deduplicated, against any OpenAI-compatible endpoint.

Until ``fullchain.llm`` lands, a minimal OpenAI-HTTP chat client lives here
(:class:`OpenAIChat`, ``POST {base_url}/chat/completions``). Each round shows the model
``examples_per_prompt`` tasks sampled from the pool and asks for one new task as
``Instruction: ...`` / ``Response: ...``; a reply that does not parse, or whose instruction is
too close to one already in the pool (word-bigram Jaccard ≥ ``max_similarity``), is counted and
skipped.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fullchain.data.text import words
from fullchain.errors import DataError
from fullchain.formats._jsonl import iter_jsonl, write_jsonl

_PARSE = re.compile(r"Instruction:\s*(?P<i>.+?)\s*Response:\s*(?P<r>.+)", re.S | re.I)


class OpenAIChat:
    """``complete(messages) -> str`` over an OpenAI-compatible ``/chat/completions``."""

    def __init__(self, base_url: str, *, model: str, api_key: str = "",
                 timeout_s: float = 60.0) -> None:
        import httpx
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                   timeout=timeout_s)

    def complete(self, messages: list[dict[str, str]], *, temperature: float = 1.0,
                 max_tokens: int = 512, seed: int | None = None) -> str:
        import httpx
        body = {"model": self.model, "messages": messages, "temperature": temperature,
                "max_tokens": max_tokens, **({"seed": seed} if seed is not None else {})}
        try:
            resp = self.client.post("/chat/completions", json=body)
            resp.raise_for_status()
            return resp.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
            raise DataError(f"{self.client.base_url}: chat completion failed ({e}); check "
                            "the endpoint URL, model name and key") from e


@dataclass(kw_only=True)
class SynthConfig:
    seeds: Path                   # JSONL rows with "instruction" and "response"
    out: Path                     # JSONL of the new pairs
    base_url: str
    model: str
    api_key: str = ""
    num_new: int = 20
    examples_per_prompt: int = 3
    max_attempts: int = 100
    max_similarity: float = 0.7
    temperature: float = 1.0
    seed: int = 0


def _bigrams(text: str) -> set[tuple[str, str]]:
    toks = words(text)
    return set(zip(toks, toks[1:])) or {(t, "") for t in toks}


def _too_similar(new: set, pool: list[set], limit: float) -> bool:
    return any(len(new & old) / max(1, len(new | old)) >= limit for old in pool)


def _prompt(examples: list[dict[str, str]]) -> list[dict[str, str]]:
    shown = "\n\n".join(f"Instruction: {e['instruction']}\nResponse: {e['response']}"
                        for e in examples)
    return [{"role": "system", "content": "You write diverse, self-contained tasks for "
             "training an assistant, each with a correct answer."},
            {"role": "user", "content": f"Here are some tasks:\n\n{shown}\n\nWrite one new "
             "task that differs from these, in the same format:\nInstruction: ...\n"
             "Response: ..."}]


def synthesize(cfg: SynthConfig, *, client: Any = None) -> dict[str, Any]:
    """Generate up to ``num_new`` pairs into ``cfg.out``; return counts of kept and skipped."""
    seeds = [row for _, row in iter_jsonl(cfg.seeds)
             if isinstance(row.get("instruction"), str) and isinstance(row.get("response"), str)]
    if not seeds:
        raise DataError(f"{cfg.seeds}: no rows with string 'instruction' and 'response'")
    client = client or OpenAIChat(cfg.base_url, model=cfg.model, api_key=cfg.api_key)
    rng = random.Random(cfg.seed)
    pool = list(seeds)
    grams = [_bigrams(s["instruction"]) for s in pool]
    new: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    attempts = 0
    while len(new) < cfg.num_new and attempts < cfg.max_attempts:
        shots = rng.sample(pool, min(cfg.examples_per_prompt, len(pool)))
        reply = client.complete(_prompt(shots), temperature=cfg.temperature,
                                seed=cfg.seed + attempts)
        attempts += 1
        m = _PARSE.search(reply)
        if not m:
            skipped["unparsable"] += 1
            continue
        pair = {"instruction": m["i"].strip(), "response": m["r"].strip()}
        g = _bigrams(pair["instruction"])
        if _too_similar(g, grams, cfg.max_similarity):
            skipped["duplicate"] += 1
            continue
        pool.append(pair)
        grams.append(g)
        new.append({"id": f"synth-{len(new):05d}", **pair, "meta": {"model": cfg.model}})
    write_jsonl(cfg.out, new)
    return {"kept": len(new), "skipped": dict(skipped), "attempts": attempts}
