"""`fullchain data`: run a cleaning pipeline from one config, resumably.

Layout of ``cfg.out``::

    plan.json                 the input files grouped into shards (fixed at the first run)
    stage/ dropped/ rejects/ dedup/   per-shard intermediate files
    done/<phase>-<shard>.json completion markers (with the shard's statistics and the seconds
                              each step took), written last
    documents/part-NNNNN.jsonl.gz|parquet   the cleaned documents
    rejects.jsonl dropped.jsonl.gz stats.json clusters.jsonl meta.json
    tokens/ (+ tokenizer/)    when tokenize.enabled

A killed run restarts at the first shard without a marker; every file is written to a
temporary name and renamed, so nothing is duplicated or lost, and outputs are identical (the
timings in stats.json, under ``seconds`` keys, are the only thing that differs).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from fullchain.config import DataError, config_to_dict
from fullchain.data.config import PipelineConfig
from fullchain.data.executor import run_tasks
from fullchain.data.stats import funnel_stats, print_funnel

FORMAT = "fullchain.data"
VERSION = 1


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=True) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def _plan(cfg: PipelineConfig) -> list[list[dict[str, Any]]]:
    from fullchain.data.readers import list_inputs, plan_shards
    path = Path(cfg.out) / "plan.json"
    if path.is_file():
        plan = json.loads(path.read_text(encoding="utf-8"))
        if plan["inputs"] != cfg.input.paths:
            raise DataError(f"{path}: this folder holds a run over other inputs "
                            f"({plan['inputs']}); use a new --out or delete the folder")
        return plan["shards"]
    files = list_inputs(cfg.input.paths)
    if not files:
        raise DataError(f"input.paths {cfg.input.paths} hold no readable file")
    shards = plan_shards(files, shard_bytes=int(cfg.input.shard_mb * 2**20))
    _write_json(path, {"inputs": cfg.input.paths, "shards": shards})
    return shards


def _phase(cfg: PipelineConfig, name: str, fn, tasks: list[tuple[int, tuple]]) -> dict:
    """Run the tasks of one phase whose marker is missing; return all markers by shard."""
    from fullchain.data.progress import Progress
    done_dir = Path(cfg.out) / "done"
    todo = [(k, a) for k, a in tasks if not (done_dir / f"{name}-{k:05d}.json").is_file()]
    with Progress(name, total=len(tasks), done=len(tasks) - len(todo),
                  enabled=cfg.progress) as bar:
        def on_done(key: int, result: dict) -> None:
            _write_json(done_dir / f"{name}-{key:05d}.json", result)
            bar.advance()

        run_tasks(fn, todo, on_done, workers=cfg.workers, executor=cfg.executor,
                  ray_address=cfg.ray_address)
    return {k: json.loads((done_dir / f"{name}-{k:05d}.json").read_text("utf-8"))
            for k, _ in tasks}


def _dedup(cfg: PipelineConfig, shards: list[int]) -> dict:
    from fullchain.data.dedup import find_duplicates
    marker = Path(cfg.out) / "done" / "dedup.json"
    if not marker.is_file():
        start = time.perf_counter()
        result = find_duplicates(Path(cfg.out) / "dedup", shards, cfg.dedup,
                                 exact="exact_dedup" in cfg.dedup_steps)
        _write_json(marker, {**result, "seconds": time.perf_counter() - start})
    return json.loads(marker.read_text(encoding="utf-8"))


def run(cfg: PipelineConfig) -> dict[str, Any]:
    """Run (or resume) the pipeline; return the summary that is also written to stats.json."""
    from fullchain.data.shard import clean_shard, write_shard
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = _plan(cfg)
    keys = list(range(len(plan)))
    cleaned = _phase(cfg, "clean", clean_shard, [(i, (cfg, i, plan[i])) for i in keys])
    dedup = _dedup(cfg, keys) if cfg.dedup_steps else {}
    written = _phase(cfg, "write", write_shard, [(i, (cfg, i)) for i in keys])
    stats = funnel_stats(cfg, cleaned, written, dedup=dedup)
    _merge_outputs(out, keys)
    if cfg.tokenize.enabled:
        from fullchain.data.tokenize import tokenize_pipeline_output
        stats["tokens"] = tokenize_pipeline_output(cfg)
    _write_json(out / "stats.json", stats)
    _write_meta(cfg, stats)
    if cfg.progress:
        print_funnel(stats, file=sys.stderr)
    return stats


def _merge_outputs(out: Path, keys: list[int]) -> None:
    """Concatenate the per-shard rejects and dropped lists, and copy the clusters file."""
    tmp = out / "rejects.jsonl.tmp"
    with open(tmp, "wb") as dst:
        for k in keys:
            dst.write((out / "rejects" / f"{k:05d}.jsonl").read_bytes())
    os.replace(tmp, out / "rejects.jsonl")
    tmp = out / "dropped.jsonl.gz.tmp"
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                               mtime=0) as dst:
        for k in keys:
            for phase in ("clean", "write"):
                with gzip.open(out / "dropped" / f"{k:05d}.{phase}.jsonl.gz", "rb") as src:
                    shutil.copyfileobj(src, dst)
    os.replace(tmp, out / "dropped.jsonl.gz")
    clusters = out / "dedup" / "clusters.jsonl"
    if clusters.is_file():
        shutil.copyfile(clusters, out / "clusters.jsonl")


def _write_meta(cfg: PipelineConfig, stats: dict) -> None:
    from fullchain.data.writers import document_files
    from fullchain.formats.lineage import make_lineage, write_meta
    lineage = make_lineage(stage="data", inputs=[], config=config_to_dict(cfg), seed=None)
    lineage["inputs"] = json.loads((Path(cfg.out) / "plan.json").read_text("utf-8"))["inputs"]
    write_meta(cfg.out, format=FORMAT, version=VERSION, lineage=lineage,
               documents=[p.name for p in document_files(cfg.out)],
               num_documents=stats["documents_out"])
