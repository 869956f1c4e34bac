"""Readers: input paths → files → shards of files → documents ``{id, text, meta}``.

Formats by suffix: JSONL (``.jsonl``/``.json``, plain, ``.gz`` or ``.zst``), Parquet, plain text
and Markdown, HTML (main text), PDF and DOCX (see :mod:`fullchain.data.extract`). Bad input — a
malformed JSON line, an undecodable or empty file, a broken or encrypted PDF — is passed to
``reject(path, line, reason)`` and reading goes on.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fullchain.config import DataError

Reject = Callable[[str, int, str], None]
JSONL = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
TEXT = (".txt", ".md", ".markdown", ".rst")
HTML = (".html", ".htm")
SUFFIXES = (*JSONL, *TEXT, *HTML, ".parquet", ".pdf", ".docx")


def _kind(path: str) -> str | None:
    low = path.lower()
    for kind, suffixes in (("jsonl", JSONL), ("text", TEXT), ("html", HTML),
                           ("parquet", (".parquet",)), ("pdf", (".pdf",)), ("docx", (".docx",))):
        if low.endswith(suffixes):
            return kind
    return None


def list_inputs(paths: list[str]) -> list[dict[str, Any]]:
    """``[{"path", "name", "source", "bytes"}]`` for every readable file under ``paths`` (files,
    folders read recursively, or glob patterns), sorted within each path. ``source`` is the name
    of the path given (a folder's or file's stem), unless a row says otherwise; ``name`` is the
    file's path from the folder holding the path given (``stdlib/json.md``), which default
    document ids are made of, so that ids (and the train/val split) do not depend on where the
    corpus lies."""
    files = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _kind(f.name))
        elif p.is_file():
            found = [p]
        else:
            found = sorted(Path(f) for f in glob.glob(given, recursive=True) if Path(f).is_file())
            if not found:
                raise DataError(f"input.paths: {given} matches no file; check the path")
        source = p.name.split(".")[0] if p.exists() else Path(given).parent.name
        root = p.parent if p.exists() else _glob_root(given)
        files += [{"path": str(f), "name": _relative(f, root), "source": source,
                   "bytes": f.stat().st_size} for f in found]
    return files


def _glob_root(pattern: str) -> Path:
    """The folder above a glob pattern's first wildcard part (``/a/b/*/c*.txt`` -> ``/a``)."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return Path(*parts[:max(1, fixed - 1)])


def _relative(f: Path, root: Path) -> str:
    try:
        return f.relative_to(root).as_posix()
    except ValueError:
        return f.name


def plan_shards(files: list[dict[str, Any]], *, shard_bytes: int) -> list[list[dict[str, Any]]]:
    """Group files, in order, into shards of about ``shard_bytes`` (a big file is its own)."""
    shards: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for f in files:
        if current and size + f["bytes"] > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(f)
        size += f["bytes"]
    if current:
        shards.append(current)
    return shards


def read_file(f: dict[str, Any], reject: Reject, *, text_key: str = "text", id_key: str = "id",
              max_pdf_pages: int = 500) -> Iterator[dict[str, Any]]:
    """Yield the documents of one planned file; send bad input to ``reject``."""
    path, kind = f["path"], _kind(f["path"])
    if f["bytes"] == 0:
        reject(path, 0, "empty_file")
        return
    if kind == "jsonl":
        yield from _read_jsonl(f, reject, text_key=text_key, id_key=id_key)
    elif kind == "parquet":
        yield from _read_parquet(f, reject, text_key=text_key, id_key=id_key)
    else:
        yield from _read_whole(f, kind, reject, max_pdf_pages=max_pdf_pages)


def _name(f: dict[str, Any]) -> str:
    return f.get("name", f["path"])  # plans written before names existed hold paths only


def _doc(f: dict[str, Any], doc_id: str, text: str, **meta: Any) -> dict[str, Any]:
    base = {"source": f["source"], "path": f["path"]}
    return {"id": doc_id, "text": text, "meta": {**base, **meta}}


def _open_binary(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        import zstandard
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")))
    return open(path, "rb")


def _read_jsonl(f: dict[str, Any], reject: Reject, *, text_key: str,
                id_key: str) -> Iterator[dict[str, Any]]:
    path = f["path"]
    lineno = 0
    try:
        with _open_binary(path) as stream:
            for lineno, raw in enumerate(stream, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    reject(path, lineno, f"not_utf8: {e.reason} at byte {e.start}")
                    continue
                if line.strip():
                    doc = _row_doc(f, lineno, line, reject, text_key=text_key, id_key=id_key)
                    if doc is not None:
                        yield doc
    except (OSError, EOFError, ValueError) as e:  # truncated gzip, bad zstd frame
        reject(path, lineno + 1, f"unreadable: {type(e).__name__}: {e}")


def _row_doc(f: dict[str, Any], lineno: int, line: str, reject: Reject, *, text_key: str,
             id_key: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        reject(f["path"], lineno, f"invalid_json: {e.msg} at column {e.colno}")
        return None
    if not isinstance(row, dict) or not isinstance(row.get(text_key), str):
        reject(f["path"], lineno, f"no_text: expected an object with a string {text_key!r}")
        return None
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    doc_id = row.get(id_key)
    doc_id = str(doc_id) if isinstance(doc_id, (str, int)) else f"{_name(f)}:{lineno}"
    doc = _doc(f, doc_id, row[text_key], line=lineno)
    doc["meta"].update(meta)
    return doc


def _read_parquet(f: dict[str, Any], reject: Reject, *, text_key: str,
                  id_key: str) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(f["path"])
        if text_key not in pf.schema_arrow.names:
            reject(f["path"], 0, f"no_text: no column {text_key!r}")
            return
        row = 0
        for batch in pf.iter_batches(batch_size=1024):
            cols = batch.to_pydict()
            for i, text in enumerate(cols[text_key]):
                row += 1
                if not isinstance(text, str):
                    reject(f["path"], row, f"no_text: {text_key!r} is not a string")
                    continue
                ids = cols.get(id_key)
                doc_id = str(ids[i]) if ids and ids[i] is not None else f"{_name(f)}:{row}"
                yield _doc(f, doc_id, text, line=row)
    except (OSError, ValueError) as e:  # pyarrow raises ArrowInvalid (a ValueError) on bad files
        reject(f["path"], 0, f"unreadable: {type(e).__name__}: {e}")


def _read_whole(f: dict[str, Any], kind: str | None, reject: Reject, *,
                max_pdf_pages: int) -> Iterator[dict[str, Any]]:
    from fullchain.data import extract
    path = f["path"]
    try:
        if kind == "pdf":
            text = extract.pdf_text(path, max_pages=max_pdf_pages)
        elif kind == "docx":
            text = extract.docx_text(path)
        else:
            raw = Path(path).read_bytes().decode("utf-8")
            text = extract.html_text(raw) if kind == "html" else raw
    except UnicodeDecodeError as e:
        reject(path, 0, f"not_utf8: {e.reason} at byte {e.start}")
        return
    except extract.ExtractError as e:
        reject(path, 0, str(e))
        return
    if not text.strip():
        reject(path, 0, "no_text_extracted")
        return
    yield _doc(f, _name(f), text, format=kind)
