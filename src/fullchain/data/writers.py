"""Writers of cleaned document shards: documents JSONL.gz (the hand-over format) or Parquet
(columns ``id``, ``text``, ``meta`` as a JSON string), both written atomically and
byte-for-byte reproducible."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fullchain.formats.documents import read_documents, write_documents

_ROWS_PER_GROUP = 10_000


def write_docs(stem: Path, docs: Iterable[dict[str, Any]], *, fmt: str) -> int:
    """Write ``docs`` to ``stem.jsonl.gz`` or ``stem.parquet``; return the count."""
    if fmt == "jsonl.gz":
        return write_documents(stem.with_name(stem.name + ".jsonl.gz"), docs)
    return _write_parquet(stem.with_name(stem.name + ".parquet"), docs)


def _write_parquet(path: Path, docs: Iterable[dict[str, Any]]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("meta", pa.string())])
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        batch: dict[str, list] = {"id": [], "text": [], "meta": []}
        for doc in docs:
            batch["id"].append(doc["id"])
            batch["text"].append(doc["text"])
            batch["meta"].append(json.dumps(doc["meta"], ensure_ascii=False, sort_keys=True))
            count += 1
            if len(batch["id"]) >= _ROWS_PER_GROUP:
                writer.write_table(pa.table(batch, schema=schema))
                batch = {k: [] for k in batch}
        if batch["id"] or not count:
            writer.write_table(pa.table(batch, schema=schema))
    os.replace(tmp, path)
    return count


def read_docs(path: Path | str) -> Iterator[dict[str, Any]]:
    """Read a shard written by :func:`write_docs` (JSONL(.gz) or Parquet)."""
    path = Path(path)
    if path.suffix != ".parquet":
        yield from read_documents(path)
        return
    import pyarrow.parquet as pq
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        cols = batch.to_pydict()
        for doc_id, text, meta in zip(cols["id"], cols["text"], cols["meta"]):
            yield {"id": doc_id, "text": text, "meta": json.loads(meta)}


def document_files(out: Path | str) -> list[Path]:
    """The final document shards of a pipeline output folder, in shard order."""
    folder = Path(out) / "documents"
    return sorted(p for p in folder.glob("part-*") if not p.name.endswith(".tmp"))
