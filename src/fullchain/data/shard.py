"""The work on one shard, run in a worker: read + per-document steps (+ the dedup index), and
later the final write (dedup removals + the steps after dedup). Each writes its files
atomically and returns its statistics, which the runner stores in the shard's completion marker.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fullchain.data.config import PipelineConfig
from fullchain.data.steps import Step, build_steps
from fullchain.formats._jsonl import atomic_write, dumps

_STEP_CACHE: dict[tuple[str, tuple[str, ...]], list[Step]] = {}


def _steps(cfg: PipelineConfig, names: list[str]) -> list[Step]:
    # built once per worker process and pipeline (the eval index and models are costly)
    key = (repr(cfg), tuple(names))
    if key not in _STEP_CACHE:
        _STEP_CACHE.clear()
        _STEP_CACHE[key] = build_steps(cfg, names)
    for step in _STEP_CACHE[key]:
        step.modified.clear()
    return _STEP_CACHE[key]


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _timed(items: Iterable[Any], row: dict[str, Any]) -> Iterator[Any]:
    """Yield from ``items``, adding the time spent producing each item to ``row["seconds"]``."""
    it = iter(items)
    while True:
        start = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            row["seconds"] += time.perf_counter() - start
            return
        row["seconds"] += time.perf_counter() - start
        yield item


def _drop_line(doc: dict, step: str, drop: tuple[str, str]) -> str:
    return dumps({"id": doc["id"], "step": step, "reason": drop[0], "detail": drop[1],
                  "path": doc["meta"].get("path")}) + "\n"


class _Funnel:
    """Per-step counts: docs/bytes in and out, seconds, drops by reason, modifications."""

    def __init__(self, names: list[str]) -> None:
        self.rows = {n: {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0,
                         "seconds": 0.0, "dropped": Counter(), "modified": Counter()}
                     for n in names}

    def run(self, steps: list[Step], docs: list[dict], dropped_out) -> list[dict]:
        """Run ``docs`` through ``steps`` (each step sees the survivors of the one before, all
        at once); write the drops in document order and return the survivors in order."""
        alive = list(range(len(docs)))
        sizes = [_nbytes(d["text"]) for d in docs]
        drops: dict[int, str] = {}
        for step in steps:
            if not alive:
                break
            row = self.rows[step.name]
            row["docs_in"] += len(alive)
            row["bytes_in"] += sum(sizes[i] for i in alive)
            start = time.perf_counter()
            results = step.apply_batch([docs[i] for i in alive])
            row["seconds"] += time.perf_counter() - start
            kept = []
            for i, drop in zip(alive, results):
                if drop:
                    row["dropped"][drop[0]] += 1
                    drops[i] = _drop_line(docs[i], step.name, drop)
                    continue
                kept.append(i)
                sizes[i] = _nbytes(docs[i]["text"])
                row["docs_out"] += 1
                row["bytes_out"] += sizes[i]
            alive = kept
        dropped_out.writelines(drops[i] for i in sorted(drops))
        return [docs[i] for i in alive]

    def finish(self, steps: list[Step]) -> dict[str, Any]:
        for step in steps:
            self.rows[step.name]["modified"].update(step.modified)
        return {n: {**r, "dropped": dict(sorted(r["dropped"].items())),
                    "modified": dict(sorted(r["modified"].items()))}
                for n, r in self.rows.items()}


def _batch_docs(steps: list[Step]) -> int:
    """How many documents go through the steps at once: what the hungriest step asks for."""
    return max((step.batch_docs for step in steps), default=1)


class _Index:
    """The shard's dedup index (pass 1 of dedup; nothing without dedup steps), timed."""

    def __init__(self, cfg: PipelineConfig, shard: int) -> None:
        from fullchain.data.dedup import DedupIndexWriter
        dedup = cfg.dedup_steps
        self.writer = DedupIndexWriter(Path(cfg.out) / "dedup", shard, cfg.dedup,
                                       exact="exact_dedup" in dedup,
                                       fuzzy="fuzzy_dedup" in dedup) if dedup else None
        self.skip = set(cfg.dedup.skip_sources)
        self.seconds = 0.0

    def add(self, doc: dict) -> None:
        if self.writer is not None:
            start = time.perf_counter()
            self.writer.add(doc["id"], doc["text"], skip=doc["meta"].get("source") in self.skip)
            self.seconds += time.perf_counter() - start

    def close(self) -> dict[str, float]:
        if self.writer is not None:
            start = time.perf_counter()
            self.writer.close()
            self.seconds += time.perf_counter() - start
        return {"seconds": self.seconds}


def clean_shard(cfg: PipelineConfig, shard: int, files: list[dict[str, Any]]) -> dict[str, Any]:
    """Read ``files``, run the steps before dedup, write ``stage/<shard>.jsonl.gz`` (the
    survivors), ``dropped/<shard>.clean.jsonl.gz``, ``rejects/<shard>.jsonl`` and the dedup
    index; return the shard's statistics."""
    from fullchain.data.readers import read_file
    out = Path(cfg.out)
    steps = _steps(cfg, cfg.pre_steps)
    funnel = _Funnel(cfg.pre_steps)
    read = {"docs_out": 0, "bytes_out": 0, "seconds": 0.0, "rejected": Counter()}
    index = _Index(cfg, shard)
    with atomic_write(out / "rejects" / f"{shard:05d}.jsonl") as rejects, \
            atomic_write(out / "dropped" / f"{shard:05d}.clean.jsonl.gz") as dropped, \
            atomic_write(out / "stage" / f"{shard:05d}.jsonl.gz") as kept:

        def reject(path: str, line: int, reason: str) -> None:
            read["rejected"][reason.split(":")[0]] += 1
            rejects.write(dumps({"path": path, "line": line, "reason": reason}) + "\n")

        docs = (doc for f in files for doc in read_file(
            f, reject, text_key=cfg.input.text_key, id_key=cfg.input.id_key,
            max_pdf_pages=cfg.input.max_pdf_pages))
        for chunk in _chunks(_timed(docs, read), _batch_docs(steps)):
            read["docs_out"] += len(chunk)
            read["bytes_out"] += sum(_nbytes(doc["text"]) for doc in chunk)
            for doc in funnel.run(steps, chunk, dropped):
                kept.write(dumps(doc) + "\n")
                index.add(doc)
    dedup_index = index.close()
    read["rejected"] = dict(sorted(read["rejected"].items()))
    return {"read": read, "steps": funnel.finish(steps), "dedup_index": dedup_index}


def _undup(cfg: PipelineConfig, funnel: _Funnel, remove: dict[str, list], docs: Iterable[dict],
           dropped_out) -> Iterator[dict]:
    """The documents dedup kept, counted in the dedup steps' rows; the (small) time of this
    filter goes on the first dedup step's row, which also gets the two dedup passes."""
    step_of = {"exact_duplicate": "exact_dedup", "near_duplicate": "fuzzy_dedup"}
    if "exact_dedup" not in cfg.dedup_steps:
        step_of["exact_duplicate"] = "fuzzy_dedup"
    timing = funnel.rows[cfg.dedup_steps[0]] if cfg.dedup_steps else {"seconds": 0.0}
    for i, doc in enumerate(docs):
        start = time.perf_counter()
        size = _nbytes(doc["text"])
        gone = remove.get(str(i))
        kept = True
        for name in cfg.dedup_steps:
            row = funnel.rows[name]
            row["docs_in"] += 1
            row["bytes_in"] += size
            if gone is not None and step_of[gone[0]] == name:
                row["dropped"][gone[0]] += 1
                dropped_out.write(dumps({"id": doc["id"], "step": name, "reason": gone[0],
                                         "detail": f"kept {gone[1]}"}) + "\n")
                kept = False
                break
            row["docs_out"] += 1
            row["bytes_out"] += size
        timing["seconds"] += time.perf_counter() - start
        if kept:
            yield doc


def write_shard(cfg: PipelineConfig, shard: int) -> dict[str, Any]:
    """Drop what dedup removed from ``stage/<shard>``, run the steps after dedup, and write
    the final ``documents/<shard>`` file; return the shard's statistics."""
    from fullchain.data.writers import write_docs
    from fullchain.formats.documents import read_documents
    out = Path(cfg.out)
    remove = {}
    if cfg.dedup_steps:
        remove = json.loads((out / "dedup" / f"{shard:05d}.remove.json").read_text("utf-8"))
    steps = _steps(cfg, cfg.post_steps)
    funnel = _Funnel([*cfg.dedup_steps, *cfg.post_steps])

    def survivors(dropped):
        staged = read_documents(out / "stage" / f"{shard:05d}.jsonl.gz")
        for chunk in _chunks(_undup(cfg, funnel, remove, staged, dropped), _batch_docs(steps)):
            yield from funnel.run(steps, chunk, dropped)

    with atomic_write(out / "dropped" / f"{shard:05d}.write.jsonl.gz") as dropped:
        count = write_docs(out / "documents" / f"part-{shard:05d}", survivors(dropped),
                           fmt=cfg.output_format)
    return {"steps": funnel.finish(steps), "documents": count}
