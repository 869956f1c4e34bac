"""Documents JSONL: the hand-over between data stages and into tokenization.

One document per line, ``{"id": str, "text": str, "meta": {...}}``; ``meta`` is free-form (the
world generator puts ``kind`` and ``lang`` there). A path ending in ``.gz`` is gzip-compressed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fullchain.config import DataError
from fullchain.formats._jsonl import iter_jsonl, write_jsonl


def write_documents(path: Path | str, docs: Iterable[dict[str, Any]]) -> int:
    """Write ``docs`` to ``path`` (atomically; gzip when it ends in ``.gz``) and return how many.

    Each doc needs a string ``id`` and ``text``; a missing ``meta`` is written as ``{}`` and other
    keys are dropped. Raises DataError naming the path and the doc's position for a bad doc.
    """

    def checked() -> Iterator[dict[str, Any]]:
        for i, doc in enumerate(docs):
            yield _check(doc, f"{path}: document #{i}")

    return write_jsonl(path, checked())


def read_documents(path: Path | str) -> Iterator[dict[str, Any]]:
    """Yield ``{"id", "text", "meta"}`` dicts from a documents JSONL(.gz) file, lazily.

    Raises DataError naming ``file:line`` for a malformed line (bad JSON, missing or non-string
    ``id``/``text``, non-object ``meta``), and naming the file when it is missing.
    """
    for lineno, row in iter_jsonl(path):
        yield _check(row, f"{path}:{lineno}")


def _check(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise DataError(f"{where}: a document must be an object, got {type(doc).__name__}")
    for key in ("id", "text"):
        if not isinstance(doc.get(key), str):
            raise DataError(
                f"{where}: {key!r} must be a string, got {type(doc.get(key)).__name__}; "
                'each line needs {"id": str, "text": str, "meta": {...}}'
            )
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise DataError(f"{where}: 'meta' must be an object, got {type(meta).__name__}")
    return {"id": doc["id"], "text": doc["text"], "meta": meta}
