"""Fuzzy dedup: fullchain vs datasketch (MinHash + MinHashLSH) vs datatrove (4-stage MinHash),
on the same generated corpus with planted near duplicates whose true Jaccard is recorded.

All use word 5-gram shingles and 14 bands x 8 rows. Printed, not asserted: documents/s (per
core: each runs on one process here, fullchain also with N worker processes), recall per
Jaccard band of the planted pairs, precision (removed documents that are planted copies) and
peak RSS. datasketch and datatrove are optional (`pip install datasketch datatrove`).

Usage: python bench/bench_dedup.py [--docs 20000] [--workers 2]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
from corpus import make_corpus  # noqa: E402  (the corpus the dedup test uses)

BANDS = [(0.0, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0), (1.0, 1.01)]


def _index_shard(args):
    from fullchain.data.config import DedupConfig
    from fullchain.data.dedup import DedupIndexWriter
    dir, shard, texts = args
    w = DedupIndexWriter(Path(dir), shard, DedupConfig(), exact=False, fuzzy=True)
    for i, t in enumerate(texts):
        w.add(str(i), t)
    w.close()
    return len(texts)


def run_fullchain(texts: list[str], workers: int) -> set[int]:
    import json

    from fullchain.data.config import DedupConfig
    from fullchain.data.dedup import find_duplicates
    tmp = Path(tempfile.mkdtemp())
    bounds = np.linspace(0, len(texts), max(workers, 1) * 4 + 1).astype(int)
    tasks = [(str(tmp), s, texts[a:b]) for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_index_shard, tasks))
    else:
        list(map(_index_shard, tasks))
    find_duplicates(tmp, list(range(len(tasks))), DedupConfig(), exact=False)
    removed = set()
    for s, (a, _) in enumerate(zip(bounds[:-1], bounds[1:])):
        rm = json.loads((tmp / f"{s:05d}.remove.json").read_text())
        removed |= {int(a) + int(i) for i in rm}
    shutil.rmtree(tmp)
    return removed


def run_datasketch(texts: list[str]) -> set[int]:
    from datasketch import MinHash, MinHashLSH
    lsh = MinHashLSH(num_perm=112, params=(14, 8))
    removed = set()
    for i, text in enumerate(texts):
        ws = text.split()
        m = MinHash(num_perm=112)
        m.update_batch([" ".join(ws[j : j + 5]).encode() for j in range(len(ws) - 4)])
        if lsh.query(m):
            removed.add(i)  # a match with an earlier document: keep the first, drop this one
        else:
            lsh.insert(str(i), m)
    return removed


def run_datatrove(texts: list[str]) -> set[int]:
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupSignature,
    )
    tmp = Path(tempfile.mkdtemp())
    cfg = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
    for step in ([docs, MinhashDedupSignature(output_folder=str(tmp / "sig"), config=cfg)],
                 [MinhashDedupBuckets(input_folder=str(tmp / "sig"),
                                      output_folder=str(tmp / "buckets"), config=cfg)],
                 [MinhashDedupCluster(input_folder=str(tmp / "buckets"),
                                      output_folder=str(tmp / "remove"), config=cfg)]):
        tasks = cfg.num_buckets if isinstance(step[0], MinhashDedupBuckets) else 1
        LocalPipelineExecutor(pipeline=step, tasks=tasks, workers=1,
                              logging_dir=str(tmp / f"logs{time.monotonic_ns()}")).run()
    removed = set(np.fromfile(tmp / "remove" / "000000.remove", dtype="<u4").tolist())
    shutil.rmtree(tmp)
    return removed


def report(name: str, removed: set[int], pairs, seconds: float, n: int, cores: int) -> None:
    planted = {b for _, b, _ in pairs}
    recall = []
    for lo, hi in BANDS:
        band = [b for _, b, j in pairs if lo <= j < hi]
        recall.append(f"{sum(b in removed for b in band) / len(band):.3f}" if band else "-")
    precision = sum(i in planted for i in removed) / max(1, len(removed))
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    print(f"| {name} | {n / seconds:,.0f} | {n / seconds / cores:,.0f} | "
          f"{' | '.join(recall)} | {precision:.4f} | {rss:,.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], help="datasketch and/or datatrove")
    args = ap.parse_args()
    start = time.perf_counter()
    texts, pairs = make_corpus(args.docs, dup_fraction=0.2)
    print(f"corpus: {len(texts):,} documents, {len(pairs):,} planted copies, "
          f"{time.perf_counter() - start:.0f} s to generate")
    bands = " | ".join(f"recall J {lo:.1f}-{min(hi, 1):.1f}" for lo, hi in BANDS[:-1])
    print(f"\n| system | docs/s | docs/s/core | {bands} | recall J=1 | precision | "
          "peak RSS MB |")
    print("|---|---:|---:|" + "---:|" * (len(BANDS) + 2))
    runs = [("fullchain, 1 process", lambda: run_fullchain(texts, 1), 1),
            (f"fullchain, {args.workers} processes", lambda: run_fullchain(texts, args.workers),
             args.workers)]
    if "datasketch" not in args.skip:
        runs.append(("datasketch MinHash+MinHashLSH", lambda: run_datasketch(texts), 1))
    if "datatrove" not in args.skip:
        runs.append(("datatrove 4-stage MinHash (3 stages timed)", lambda: run_datatrove(texts),
                     1))
    for name, fn, cores in runs:
        t = time.perf_counter()
        try:
            removed = fn()
        except ImportError as e:  # an optional competitor (or its own extra) is missing
            print(f"| {name} | skipped: {e} |")
            continue
        report(name, removed, pairs, time.perf_counter() - t, len(texts), cores)


if __name__ == "__main__":
    main()
