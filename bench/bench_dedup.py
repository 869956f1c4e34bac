"""Fuzzy dedup: fullchain vs datasketch (MinHash + MinHashLSH) vs datatrove (4-stage MinHash),
on the same generated corpus with planted near duplicates whose true Jaccard is recorded.

The corpus is written once to ``--corpus`` (text shards, one document per line, and the planted
pairs with their true Jaccard of word 5-gram shingle sets). Each system then runs in a fresh
process that streams the shards from disk, so its peak RSS is its own and the timing covers
reading. All use word 5-gram shingles. fullchain uses its defaults (16 bands x 6 rows), also
with ``--workers`` processes; datasketch runs with the same banding and with datatrove's
(14 x 8); datatrove runs with its defaults (14 x 8) on the first ``--datatrove-docs`` documents
(it is ~15x slower than the others). Printed, not asserted: documents/s and per core, recall per
Jaccard band of the planted copies, precision (removed documents that are planted copies) and
the peak RSS of the largest process. datasketch and datatrove are optional
(``pip install datasketch datatrove spacy xxhash``).

Usage: python bench/bench_dedup.py [--docs 200000] [--workers 2] [--systems fullchain ...]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
from corpus import jaccard  # noqa: E402  (the dedup test's definition of the true Jaccard)

BANDS = [(0.0, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0), (1.0, 1.01)]
SHARD_DOCS = 10_000
SYSTEMS = ["fullchain", "fullchain-workers", "datasketch", "datasketch-14x8", "datatrove"]


def write_corpus(dir: Path, num_docs: int, *, dup_fraction: float = 0.2, seed: int = 0) -> None:
    """Originals are random text (340 words over a 30k-word vocabulary); a planted copy edits
    one of the last 50k originals by replacing 0-10% of its words (Jaccard ~0.5-1.0)."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
             for _ in range(30_000)]
    recent: deque[tuple[int, str]] = deque(maxlen=50_000)
    pairs, out, shard = [], None, -1
    for i in range(num_docs):
        if i // SHARD_DOCS != shard:
            shard = i // SHARD_DOCS
            out = open(dir / f"part-{shard:05d}.txt", "w", encoding="utf-8")  # noqa: SIM115
        if recent and rng.random() < dup_fraction:
            src, text = recent[rng.randrange(len(recent))]
            ws = text.split()
            edit = rng.choice([0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1])
            for j in rng.sample(range(len(ws)), int(edit * len(ws))):
                ws[j] = rng.choice(vocab)
            copy = " ".join(ws)
            pairs.append((src, i, jaccard(text, copy)))
            out.write(copy + "\n")
        else:
            text = " ".join(rng.choices(vocab, k=340))
            recent.append((i, text))
            out.write(text + "\n")
        if (i + 1) % SHARD_DOCS == 0 or i + 1 == num_docs:
            out.close()
    np.save(dir / "pairs.npy", np.array(pairs, dtype=np.float64).reshape(-1, 3))
    (dir / "done").write_text(str(num_docs))


def ensure_corpus(dir: Path, num_docs: int) -> None:
    if (dir / "done").exists() and (dir / "done").read_text() == str(num_docs):
        return
    shutil.rmtree(dir, ignore_errors=True)
    dir.mkdir(parents=True)
    start = time.perf_counter()
    write_corpus(dir, num_docs)
    print(f"corpus: {num_docs:,} documents written to {dir} in "
          f"{time.perf_counter() - start:.0f} s", flush=True)


def iter_texts(corpus: Path, limit: int | None = None):
    n = 0
    for path in sorted(corpus.glob("part-*.txt")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if limit is not None and n >= limit:
                    return
                yield line.rstrip("\n")
                n += 1


def _index_shard(args: tuple[str, int, str]) -> None:
    from fullchain.data.config import DedupConfig
    from fullchain.data.dedup import DedupIndexWriter
    dir, shard, path = args
    w = DedupIndexWriter(Path(dir), shard, DedupConfig(), exact=False, fuzzy=True)
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            w.add(str(i), line.rstrip("\n"))
    w.close()


def run_fullchain(corpus: Path, workers: int) -> list[int]:
    from fullchain.data.config import DedupConfig
    from fullchain.data.dedup import find_duplicates
    tmp = Path(tempfile.mkdtemp())
    paths = sorted(corpus.glob("part-*.txt"))
    tasks = [(str(tmp), s, str(p)) for s, p in enumerate(paths)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_index_shard, tasks))
    else:
        list(map(_index_shard, tasks))
    find_duplicates(tmp, list(range(len(tasks))), DedupConfig(), exact=False)
    removed = []
    for s in range(len(tasks)):
        rm = json.loads((tmp / f"{s:05d}.remove.json").read_text())
        removed += [s * SHARD_DOCS + int(i) for i in rm]
    shutil.rmtree(tmp)
    return removed


def run_datasketch(corpus: Path, bands: int, rows: int) -> list[int]:
    from datasketch import MinHash, MinHashLSH
    lsh = MinHashLSH(num_perm=bands * rows, params=(bands, rows))
    removed = []
    for i, text in enumerate(iter_texts(corpus)):
        ws = text.split()
        m = MinHash(num_perm=bands * rows)
        m.update_batch([" ".join(ws[j : j + 5]).encode() for j in range(len(ws) - 4)])
        if lsh.query(m):
            removed.append(i)  # a match with an earlier document: keep the first, drop this one
        else:
            lsh.insert(str(i), m)
    return removed


def run_datatrove(corpus: Path, limit: int) -> list[int]:
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

    def read(_data, _rank, _world):
        return (Document(text=t, id=str(i)) for i, t in enumerate(iter_texts(corpus, limit)))

    for step in ([read, MinhashDedupSignature(output_folder=str(tmp / "sig"), config=cfg)],
                 [MinhashDedupBuckets(input_folder=str(tmp / "sig"),
                                      output_folder=str(tmp / "buckets"), config=cfg)],
                 [MinhashDedupCluster(input_folder=str(tmp / "buckets"),
                                      output_folder=str(tmp / "remove"), config=cfg)]):
        tasks = cfg.num_buckets if isinstance(step[0], MinhashDedupBuckets) else 1
        LocalPipelineExecutor(pipeline=step, tasks=tasks, workers=1,
                              logging_dir=str(tmp / f"logs{time.monotonic_ns()}")).run()
    removed = np.fromfile(tmp / "remove" / "000000.remove", dtype="<u4").tolist()
    shutil.rmtree(tmp)
    return removed


def run_one(system: str, corpus: Path, workers: int, datatrove_docs: int) -> None:
    """In a fresh process: run ``system``, print one JSON line with its figures."""
    start = time.perf_counter()
    removed = {"fullchain": lambda: run_fullchain(corpus, 1),
               "fullchain-workers": lambda: run_fullchain(corpus, workers),
               "datasketch": lambda: run_datasketch(corpus, 16, 6),
               "datasketch-14x8": lambda: run_datasketch(corpus, 14, 8),
               "datatrove": lambda: run_datatrove(corpus, datatrove_docs)}[system]()
    seconds = time.perf_counter() - start
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    out = Path(tempfile.mkstemp(suffix=".npy")[1])
    np.save(out, np.array(sorted(removed), dtype=np.int64))
    print(json.dumps({"seconds": seconds, "rss_mb": rss, "removed": str(out)}))


def report(name: str, result: dict, pairs: np.ndarray, num_docs: int, cores: int) -> None:
    removed = set(np.load(result["removed"]).tolist())
    Path(result["removed"]).unlink()
    pairs = pairs[pairs[:, 1] < num_docs]
    planted = set(pairs[:, 1].astype(int).tolist())
    recall = []
    for lo, hi in BANDS:
        band = pairs[(pairs[:, 2] >= lo) & (pairs[:, 2] < hi), 1].astype(int)
        recall.append(f"{np.mean([b in removed for b in band]):.3f}" if len(band) else "-")
    precision = sum(i in planted for i in removed) / max(1, len(removed))
    rate = num_docs / result["seconds"]
    print(f"| {name} | {num_docs:,} | {rate:,.0f} | {rate / cores:,.0f} | {' | '.join(recall)} | "
          f"{precision:.4f} | {result['rss_mb']:,.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--systems", nargs="*", default=SYSTEMS, choices=SYSTEMS)
    ap.add_argument("--datatrove-docs", type=int, default=20_000)
    ap.add_argument("--corpus", type=Path, default=None, help="default: /tmp/dedup-corpus-N")
    ap.add_argument("--run", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    corpus = args.corpus or Path(tempfile.gettempdir()) / f"dedup-corpus-{args.docs}"
    if args.run:
        return run_one(args.run, corpus, args.workers, args.datatrove_docs)
    ensure_corpus(corpus, args.docs)
    pairs = np.load(corpus / "pairs.npy")
    bands = " | ".join(f"recall J {lo:.1f}-{min(hi, 1):.1f}" for lo, hi in BANDS[:-1])
    print(f"\n| system | docs | docs/s | docs/s/core | {bands} | recall J=1 | precision | "
          "peak RSS MB |")
    print("|---|---:|---:|---:|" + "---:|" * (len(BANDS) + 2))
    names = {"fullchain": ("fullchain 16x6, 1 process", 1),
             "fullchain-workers": (f"fullchain 16x6, {args.workers} processes", args.workers),
             "datasketch": ("datasketch MinHash+MinHashLSH 16x6", 1),
             "datasketch-14x8": ("datasketch MinHash+MinHashLSH 14x8", 1),
             "datatrove": ("datatrove 4-stage MinHash 14x8 (3 stages timed)", 1)}
    for system in args.systems:
        proc = subprocess.run([sys.executable, __file__, "--run", system, "--corpus", str(corpus),
                               "--workers", str(args.workers),
                               "--datatrove-docs", str(args.datatrove_docs)],
                              capture_output=True, text=True)
        name, cores = names[system]
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"| {name} | failed: {last} |", flush=True)
            continue
        n = min(args.docs, args.datatrove_docs) if system == "datatrove" else args.docs
        report(name, json.loads(proc.stdout.strip().splitlines()[-1]), pairs, n, cores)


if __name__ == "__main__":
    main()
