"""A generated corpus with planted exact and near duplicates whose true Jaccard similarity (of
word 5-gram shingle sets) is recorded; shared by the dedup test and bench/bench_dedup.py."""

from __future__ import annotations

import random


def shingle_set(text: str, n: int = 5) -> set:
    ws = text.lower().split()
    return {tuple(ws[i : i + n]) for i in range(max(1, len(ws) - n + 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def make_corpus(num_docs: int, *, dup_fraction: float = 0.2, words_per_doc: int = 340,
                seed: int = 0) -> tuple[list[str], list[tuple[int, int, float]]]:
    """(texts, planted pairs ``(original index, copy index, true jaccard)``). Originals are
    random text over a 30k-word vocabulary; each copy edits an original by replacing a random
    share of its words (0 to ~10%), so its Jaccard spreads over ~0.5-1.0."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
             for _ in range(30_000)]
    num_dups = int(num_docs * dup_fraction)
    originals = num_docs - num_dups
    texts = [" ".join(rng.choices(vocab, k=words_per_doc)) for _ in range(originals)]
    pairs = []
    for _ in range(num_dups):
        src = rng.randrange(originals)
        ws = texts[src].split()
        edit = rng.choice([0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1])
        for i in rng.sample(range(len(ws)), int(edit * len(ws))):
            ws[i] = rng.choice(vocab)
        copy = " ".join(ws)
        pairs.append((src, len(texts), jaccard(texts[src], copy)))
        texts.append(copy)
    return texts, pairs
