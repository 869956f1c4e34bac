"""The work on one shard, run in a worker: read + per-document steps (+ the dedup index), and
later the final write (dedup removals + the steps after dedup). Each writes its files
atomically and returns its statistics, which the runner stores in the shard's completion marker.
"""

from __future__ import annotations

import json
from collections import Counter
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


class _Funnel:
    """Per-step counts: docs/bytes in and out, drops by reason, modifications."""

    def __init__(self, names: list[str]) -> None:
        self.rows = {n: {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0,
                         "dropped": Counter(), "modified": Counter()} for n in names}

    def run(self, steps: list[Step], doc: dict, dropped_out) -> bool:
        for step in steps:
            row = self.rows[step.name]
            row["docs_in"] += 1
            row["bytes_in"] += _nbytes(doc["text"])
            drop = step.apply(doc)
            if drop:
                row["dropped"][drop[0]] += 1
                dropped_out.write(dumps({"id": doc["id"], "step": step.name, "reason": drop[0],
                                         "detail": drop[1], "path": doc["meta"].get("path")}))
                dropped_out.write("\n")
                return False
            row["docs_out"] += 1
            row["bytes_out"] += _nbytes(doc["text"])
        return True

    def finish(self, steps: list[Step]) -> dict[str, Any]:
        for step in steps:
            self.rows[step.name]["modified"].update(step.modified)
        return {n: {**r, "dropped": dict(sorted(r["dropped"].items())),
                    "modified": dict(sorted(r["modified"].items()))}
                for n, r in self.rows.items()}


def clean_shard(cfg: PipelineConfig, shard: int, files: list[dict[str, Any]]) -> dict[str, Any]:
    """Read ``files``, run the steps before dedup, write ``stage/<shard>.jsonl.gz`` (the
    survivors), ``dropped/<shard>.clean.jsonl.gz``, ``rejects/<shard>.jsonl`` and the dedup
    index; return the shard's statistics."""
    from fullchain.data.dedup import DedupIndexWriter
    from fullchain.data.readers import read_file
    out = Path(cfg.out)
    names = cfg.pre_steps
    steps = _steps(cfg, names)
    funnel = _Funnel(names)
    read = {"docs_out": 0, "bytes_out": 0, "rejected": Counter()}
    dedup = cfg.dedup_steps
    index = DedupIndexWriter(out / "dedup", shard, cfg.dedup, exact="exact_dedup" in dedup,
                             fuzzy="fuzzy_dedup" in dedup) if dedup else None
    skip = set(cfg.dedup.skip_sources)
    with atomic_write(out / "rejects" / f"{shard:05d}.jsonl") as rejects, \
            atomic_write(out / "dropped" / f"{shard:05d}.clean.jsonl.gz") as dropped, \
            atomic_write(out / "stage" / f"{shard:05d}.jsonl.gz") as kept:

        def reject(path: str, line: int, reason: str) -> None:
            read["rejected"][reason.split(":")[0]] += 1
            rejects.write(dumps({"path": path, "line": line, "reason": reason}) + "\n")

        for f in files:
            for doc in read_file(f, reject, text_key=cfg.input.text_key, id_key=cfg.input.id_key,
                                 max_pdf_pages=cfg.input.max_pdf_pages):
                read["docs_out"] += 1
                read["bytes_out"] += _nbytes(doc["text"])
                if funnel.run(steps, doc, dropped):
                    kept.write(dumps(doc) + "\n")
                    if index is not None:
                        index.add(doc["id"], doc["text"],
                                  skip=doc["meta"].get("source") in skip)
    if index is not None:
        index.close()
    read["rejected"] = dict(sorted(read["rejected"].items()))
    return {"read": read, "steps": funnel.finish(steps)}


def write_shard(cfg: PipelineConfig, shard: int) -> dict[str, Any]:
    """Drop what dedup removed from ``stage/<shard>``, run the steps after dedup, and write
    the final ``documents/<shard>`` file; return the shard's statistics."""
    from fullchain.data.writers import write_docs
    from fullchain.formats.documents import read_documents
    out = Path(cfg.out)
    remove = {}
    if cfg.dedup_steps:
        remove = json.loads((out / "dedup" / f"{shard:05d}.remove.json").read_text("utf-8"))
    names = cfg.post_steps
    steps = _steps(cfg, names)
    funnel = _Funnel([*cfg.dedup_steps, *names])
    step_of = {"exact_duplicate": "exact_dedup", "near_duplicate": "fuzzy_dedup"}
    if "exact_dedup" not in cfg.dedup_steps:
        step_of["exact_duplicate"] = "fuzzy_dedup"

    def survivors(dropped):
        for i, doc in enumerate(read_documents(out / "stage" / f"{shard:05d}.jsonl.gz")):
            size = _nbytes(doc["text"])
            gone = remove.get(str(i))
            for name in cfg.dedup_steps:
                row = funnel.rows[name]
                row["docs_in"] += 1
                row["bytes_in"] += size
                if gone is not None and step_of[gone[0]] == name:
                    row["dropped"][gone[0]] += 1
                    dropped.write(dumps({"id": doc["id"], "step": name, "reason": gone[0],
                                         "detail": f"kept {gone[1]}"}) + "\n")
                    break
                row["docs_out"] += 1
                row["bytes_out"] += size
            else:
                if funnel.run(steps, doc, dropped):
                    yield doc

    with atomic_write(out / "dropped" / f"{shard:05d}.write.jsonl.gz") as dropped:
        count = write_docs(out / "documents" / f"part-{shard:05d}", survivors(dropped),
                           fmt=cfg.output_format)
    return {"steps": funnel.finish(steps), "documents": count}
