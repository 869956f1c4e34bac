"""Dedup on planted near-duplicates: recall >= 0.95 at Jaccard >= 0.8, precision >= 0.95."""

import json

import numpy as np

from fullchain.data.config import DedupConfig
from fullchain.data.dedup import DedupIndexWriter, find_duplicates

from .corpus import make_corpus


def run_dedup(tmp_path, texts, *, shards=3, **cfg):
    cfg = DedupConfig(**cfg)
    bounds = np.linspace(0, len(texts), shards + 1).astype(int)
    where = {}
    for s in range(shards):
        w = DedupIndexWriter(tmp_path, s, cfg, exact=True, fuzzy=True)
        for i in range(bounds[s], bounds[s + 1]):
            w.add(f"doc{i}", texts[i])
            where[(s, i - bounds[s])] = i
        w.close()
    summary = find_duplicates(tmp_path, list(range(shards)), cfg, exact=True)
    removed = {}
    for s in range(shards):
        for idx, (reason, kept) in json.loads((tmp_path / f"{s:05d}.remove.json").read_text()
                                              ).items():
            removed[where[(s, int(idx))]] = (reason, int(kept[3:]))
    return summary, removed


def test_recall_and_precision_on_planted_duplicates(tmp_path):
    texts, pairs = make_corpus(1500, dup_fraction=0.25)
    _, removed = run_dedup(tmp_path, texts, bucket_entries=500)  # several hash slices
    high = [(a, b) for a, b, j in pairs if j >= 0.8]
    assert len(high) > 150
    recall = sum(b in removed for a, b in high) / len(high)
    planted = {b for _, b, _ in pairs}
    precision = sum(i in planted for i in removed) / max(1, len(removed))
    assert recall >= 0.95, recall
    assert precision >= 0.95, precision
    exact = [b for a, b, j in pairs if j == 1.0]
    assert exact and all(removed[b][0] == "exact_duplicate" for b in exact)
    for _, (_reason, kept) in removed.items():
        assert kept not in removed  # every cluster keeps one document


def test_exact_only_and_skipped_documents(tmp_path):
    cfg = DedupConfig()
    w = DedupIndexWriter(tmp_path, 0, cfg, exact=True, fuzzy=False)
    for i, t in enumerate(["Hello,  World!", "hello world", "other text", "hello world"]):
        w.add(str(i), t, skip=(i == 3))
    w.close()
    summary = find_duplicates(tmp_path, [0], cfg, exact=True)
    assert summary["removed"] == {"exact_duplicate": 1}
    assert json.loads((tmp_path / "00000.remove.json").read_text()) == \
        {"1": ["exact_duplicate", "0"]}
