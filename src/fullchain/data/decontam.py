"""Decontamination: drop documents that contain an evaluation item's n-gram.

Eval items come from any JSONL (the ``fields`` of each row). An item of at least ``ngram`` words
contributes all its ``ngram``-word windows; a shorter item (but at least ``min_tokens`` words)
contributes itself whole, as GPT-3's filter did. Words are lower-cased letter/digit runs and CJK
characters one by one, so punctuation and spacing differences do not hide a leak.
"""

from __future__ import annotations

from pathlib import Path

from fullchain.config import DataError
from fullchain.data.text import words
from fullchain.formats._jsonl import iter_jsonl


class EvalIndex:
    """The n-grams of a set of eval items, grouped by length, to look up document windows."""

    def __init__(self, *, ngram: int, min_tokens: int) -> None:
        self.ngram, self.min_tokens = ngram, min_tokens
        self.grams: dict[int, set[tuple[str, ...]]] = {}
        self.num_items = 0

    def add(self, text: str) -> None:
        toks = words(text)
        if len(toks) < self.min_tokens:
            return
        self.num_items += 1
        n = min(self.ngram, len(toks))
        bucket = self.grams.setdefault(n, set())
        bucket.update(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))

    def find(self, text: str) -> str | None:
        """The first eval n-gram found in ``text`` (space-joined), or None."""
        toks = words(text)
        for n, bucket in sorted(self.grams.items()):
            for i in range(len(toks) - n + 1):
                gram = tuple(toks[i : i + n])
                if gram in bucket:
                    return " ".join(gram)
        return None


def _eval_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.name.endswith((".jsonl", ".jsonl.gz")))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"decontaminate.eval_paths: {p} does not exist; point it to eval "
                            "JSONL files or a folder of them")
    return files


def load_eval_index(paths: list[str], fields: list[str], *, ngram: int,
                    min_tokens: int) -> EvalIndex:
    """Read every JSONL row of ``paths`` and index the string values of ``fields``."""
    index = EvalIndex(ngram=ngram, min_tokens=min_tokens)
    for path in _eval_files(paths):
        for _, row in iter_jsonl(path):
            for key in fields:
                if isinstance(row.get(key), str):
                    index.add(row[key])
    return index
