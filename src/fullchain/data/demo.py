"""The demo's data stage: the world's documents, the machine's real text and a small forum dump
with planted eval leaks, through the whole cleaning pipeline into DIR/data."""

from __future__ import annotations

from pathlib import Path

from fullchain.config import load_config
from fullchain.data.config import PipelineConfig
from fullchain.data.local_text import write_forum, write_local_text
from fullchain.data.pipeline import run


def demo_config(out: Path, *, quick: bool) -> PipelineConfig:
    """World documents are synthetic on purpose (paraphrases, arithmetic drills), so the web
    heuristics, language filter and dedup leave them alone; everything else gets every step."""
    world = ["world"]
    return load_config(PipelineConfig, data={
        "input": {"paths": [str(out / "world" / "documents.jsonl"), str(out / "raw" / "stdlib"),
                            str(out / "raw" / "licenses"), str(out / "raw" / "forum.jsonl")],
                  "shard_mb": 1.0},
        "out": str(out / "data"),
        "workers": 1,
        "steps": ["normalize", "langid", "quality", "pii", "decontaminate", "exact_dedup",
                  "fuzzy_dedup"],
        # NFC keeps the Chinese full-width punctuation that the world's eval questions use
        "normalize": {"form": "NFC"},
        "langid": {"skip_sources": world},
        "quality": {"skip_sources": world, "min_words": 30, "c4_line_filter": False},
        "dedup": {"skip_sources": world},
        "decontaminate": {"eval_paths": [str(out / "world" / "eval")]},
    })


def run_demo_pipeline(out: Path, *, quick: bool) -> dict:
    out = Path(out)
    # the quick run keeps real text to a few percent of its tokens, so the tiny model's
    # validation loss still measures what it learned about the world
    found = write_local_text(out / "raw", max_modules=8 if quick else 150,
                             max_copyrights=30 if quick else 300)
    leaks = write_forum(out / "raw" / "forum.jsonl", out / "world" / "eval" / "heldout_qa.jsonl")
    stats = run(demo_config(out, quick=quick))
    clusters = []
    path = out / "data" / "clusters.jsonl"
    if path.is_file():
        import json
        clusters = [json.loads(line) for line in path.read_text("utf-8").splitlines()[:5]]
    steps = stats["steps"]
    dedup = stats.get("dedup", {}).get("removed", {})
    return {**found, "planted_leaks": leaks, "funnel": steps, "clusters": clusters,
            "documents_in": steps[0]["docs_in"], "documents_out": stats["documents_out"],
            "duplicates_removed": sum(dedup.values()),
            "num_clusters": stats.get("dedup", {}).get("clusters", 0),
            "rejected": sum(stats["rejected"].values())}
