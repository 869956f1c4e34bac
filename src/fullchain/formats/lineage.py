"""Lineage and ``meta.json``: what every hand-over directory records about how it was made.

Each stage writes ``<out_dir>/meta.json`` last, as ``{"format", "version", ..., "lineage"}``, where
lineage is ``{"stage", "fullchain_version", "created_utc", "seed", "config", "inputs": [{"path",
"sha256"}]}``. Readers check the format name and refuse versions newer than they know.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fullchain.config import DataError

META_NAME = "meta.json"
_CHUNK_BYTES = 1 << 20


def hash_path(path: Path | str) -> str:
    """Return the sha256 hex digest of a file, or of a directory's content.

    A directory hashes its sorted relative file paths with each file's hash, so renames count and
    walk order does not. A ``meta.json`` inside is hashed without its ``lineage`` key: lineage
    holds a timestamp and the hashes of its own inputs, and a rerun that reproduces the same
    content must give the same hash. Temporary ``*.tmp`` files are skipped.
    Raises DataError when ``path`` does not exist.
    """
    path = Path(path)
    if path.is_file():
        return _hash_meta(path) if path.name == META_NAME else _hash_file(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such file or directory to hash; check the input path")
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".tmp"):
        rel = file.relative_to(path).as_posix()
        file_hash = _hash_meta(file) if file.name == META_NAME else _hash_file(file)
        digest.update(f"{rel}\0{file_hash}\n".encode())
    return digest.hexdigest()


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_meta(path: Path) -> str:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _hash_file(path)  # not ours: hash the bytes as they are
    if isinstance(meta, dict):
        meta.pop("lineage", None)
    canonical = json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def make_lineage(
    *, stage: str, inputs: list[Path | str], config: dict, seed: int | None
) -> dict[str, Any]:
    """Build the lineage record of an artefact made by ``stage`` from ``inputs`` (files or
    directories, each hashed with :func:`hash_path`) under the resolved ``config``."""
    from fullchain import __version__

    return {
        "stage": stage,
        "fullchain_version": __version__,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seed": seed,
        "config": config,
        "inputs": [{"path": str(p), "sha256": hash_path(p)} for p in inputs],
    }


def write_meta(dir: Path | str, *, format: str, version: int, lineage: dict, **fields: Any) -> Path:
    """Write ``dir/meta.json`` = ``{"format", "version", **fields, "lineage"}`` atomically (a
    temporary file then ``os.replace``) and return its path. Stages write it last, so its
    presence means the directory is complete."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    meta = {"format": format, "version": version, **fields, "lineage": lineage}
    path = dir / META_NAME
    tmp = dir / (META_NAME + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_meta(dir: Path | str, *, format: str, max_version: int) -> dict[str, Any]:
    """Read ``dir/meta.json`` and check it describes ``format`` at a version ≤ ``max_version``.

    Raises DataError naming the file when it is missing, not JSON, of another format, or written
    by a newer fullchain.
    """
    path = Path(dir) / META_NAME
    if not path.is_file():
        raise DataError(
            f"{path}: not found; {dir} is not a finished {format} directory "
            "(run the stage that writes it, or point to the right folder)"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); rerun the stage that wrote it") from e
    if not isinstance(meta, dict) or meta.get("format") != format:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(f"{path}: format is {found!r}, expected {format!r}; wrong input folder?")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise DataError(f"{path}: 'version' must be an integer, got {version!r}")
    if version > max_version:
        raise DataError(
            f"{path}: {format} version {version} is newer than this fullchain reads "
            f"(≤ {max_version}); upgrade fullchain"
        )
    return meta
