"""JSONL plumbing shared by the documents, chat and eval formats: gzip by suffix, atomic writes,
and errors that name ``file:line``."""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from fullchain.config import DataError


def is_gzip(path: Path | str) -> bool:
    """True when ``path`` names a gzip file (by its ``.gz`` suffix)."""
    return str(path).endswith(".gz")


@contextmanager
def atomic_write(path: Path | str, *, binary: bool = False) -> Iterator[IO[Any]]:
    """Open ``path.tmp`` for writing (text UTF-8, or bytes when ``binary``) and move it over
    ``path`` only when the block succeeds, so a reader never sees a half-written hand-over file.
    A ``.gz`` path is gzip-compressed with a zero mtime and no embedded file name, so equal
    content gives equal bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as raw:
            stream: IO[bytes] = raw
            if is_gzip(path):
                stream = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
            if binary:
                yield stream
            else:
                text = io.TextIOWrapper(stream, encoding="utf-8", newline="\n")
                yield text
                text.flush()
                text.detach()  # the gzip/raw stream is closed below, not by the wrapper
            if stream is not raw:
                stream.close()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def dumps(row: Any) -> str:
    """One JSONL line (no newline): UTF-8 kept as is, no spaces, stable across runs."""
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def write_jsonl(path: Path | str, rows: Iterable[Any]) -> int:
    """Write ``rows`` as JSONL (gzip when ``path`` ends in ``.gz``) atomically; return the count."""
    count = 0
    with atomic_write(path) as out:
        for row in rows:
            out.write(dumps(row))
            out.write("\n")
            count += 1
    return count


def iter_jsonl(path: Path | str, *, allow_list: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL(.gz) file.

    Raises DataError naming ``file:line`` for a line that is not a JSON object (or a list, when
    ``allow_list``), and naming the file when it is missing, not UTF-8 or a broken gzip stream."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path or run the stage that writes it")
    opener = gzip.open if is_gzip(path) else open
    lineno = 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    yield lineno, _parse(path, lineno, line, allow_list)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{lineno + 1}: not UTF-8 ({e.reason}); re-encode the file") from e
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e}); the file is truncated or not gzip") from e


def _parse(path: Path, lineno: int, line: str, allow_list: bool) -> Any:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno}); fix or delete the line"
        ) from e
    if not isinstance(obj, dict) and not (allow_list and isinstance(obj, list)):
        raise DataError(
            f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}"
        )
    return obj
