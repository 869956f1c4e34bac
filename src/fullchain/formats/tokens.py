"""Token shards: tokenized pretraining data on disk (CONVENTIONS §9, datatrove-like).

A token directory holds, per shard ``<name>`` (one per split: ``train``, ``val``):

- ``<name>.bin``: the tokens of all documents back to back, little-endian uint32;
- ``<name>.idx``: little-endian uint64 cumulative document END offsets, in tokens;

and one ``meta.json``: ``{"format": "fullchain.tokens", "version": 1, "dtype": "uint32",
"tokenizer_hash", "vocab_size", "eos_token_id", "num_tokens", "num_documents", "shards": [{"name",
"num_tokens", "num_documents"}], "lineage"}``.

The writer appends ``eos_token_id`` after every document, so each document in the shard ends
with EOS (and its length counts it): a window that crosses documents still sees the separator the
model is trained to predict, and document ``i`` is ``tokens[ends[i-1]:ends[i]]``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fullchain.config import DataError
from fullchain.formats.lineage import read_meta, write_meta

FORMAT = "fullchain.tokens"
VERSION = 1
TOKEN_DTYPE = np.dtype("<u4")
END_DTYPE = np.dtype("<u8")
_SCAN_TOKENS = 1 << 24  # validate() reads the memmap in 64 MiB slices to keep memory flat


class TokenShardWriter:
    """Stream documents into ``dir/<name>.bin`` and ``dir/<name>.idx``.

    ``add_document(ids)`` appends the ids and then ``eos_token_id``. Files are written as
    ``*.tmp`` and renamed by ``close()``, which returns ``{"name", "num_tokens",
    "num_documents"}``; ``meta.json`` is written separately by :func:`write_token_meta` (one meta
    describes all shards of a directory). Usable as a context manager.
    """

    def __init__(
        self, dir: Path | str, name: str, *, tokenizer_hash: str, vocab_size: int, eos_token_id: int
    ) -> None:
        if not 0 <= eos_token_id < vocab_size:
            raise DataError(
                f"eos_token_id {eos_token_id} is outside the vocabulary [0, {vocab_size})"
            )
        self.dir, self.name = Path(dir), name
        self.tokenizer_hash = tokenizer_hash
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self._bin = open(self.dir / f"{name}.bin.tmp", "wb")
        self._idx = open(self.dir / f"{name}.idx.tmp", "wb")
        self.num_tokens = 0
        self.num_documents = 0

    def add_document(self, ids: Iterable[int]) -> None:
        """Append one document's token ids followed by EOS. Raises DataError for an id outside
        ``[0, vocab_size)``."""
        arr = np.fromiter(ids, dtype=np.int64) if not isinstance(ids, np.ndarray) else ids
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= self.vocab_size):
            bad = int(arr.max()) if int(arr.max()) >= self.vocab_size else int(arr.min())
            raise DataError(
                f"{self.dir / self.name}.bin: document #{self.num_documents} has token id {bad} "
                f"outside the vocabulary [0, {self.vocab_size}); tokenizer and vocab_size disagree"
            )
        tokens = np.append(arr.astype(TOKEN_DTYPE), np.array([self.eos_token_id], TOKEN_DTYPE))
        self._bin.write(tokens.tobytes())
        self.num_tokens += int(tokens.size)
        self.num_documents += 1
        self._idx.write(np.array([self.num_tokens], END_DTYPE).tobytes())

    def close(self) -> dict[str, Any]:
        """Finish both files (renaming them into place) and return the shard's summary."""
        if not self._bin.closed:
            self._bin.close()
            self._idx.close()
            for ext in ("bin", "idx"):
                os.replace(self.dir / f"{self.name}.{ext}.tmp", self.dir / f"{self.name}.{ext}")
        return {
            "name": self.name,
            "num_tokens": self.num_tokens,
            "num_documents": self.num_documents,
        }

    def __enter__(self) -> TokenShardWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
            return
        self._bin.close()  # a failed shard must not look finished: drop the partial files
        self._idx.close()
        for ext in ("bin", "idx"):
            (self.dir / f"{self.name}.{ext}.tmp").unlink(missing_ok=True)


def write_token_meta(
    out_dir: Path | str,
    shards: list[dict[str, Any]],
    *,
    tokenizer_hash: str,
    vocab_size: int,
    eos_token_id: int,
    lineage: dict[str, Any],
) -> Path:
    """Write the ``meta.json`` describing ``shards`` (as returned by ``TokenShardWriter.close``)."""
    return write_meta(
        out_dir,
        format=FORMAT,
        version=VERSION,
        lineage=lineage,
        dtype="uint32",
        tokenizer_hash=tokenizer_hash,
        vocab_size=vocab_size,
        eos_token_id=eos_token_id,
        num_tokens=sum(s["num_tokens"] for s in shards),
        num_documents=sum(s["num_documents"] for s in shards),
        shards=shards,
    )


def write_token_dataset(
    out_dir: Path | str,
    splits: dict[str, Iterable[Iterable[int]]],
    *,
    tokenizer_hash: str,
    vocab_size: int,
    eos_token_id: int,
    lineage: dict[str, Any],
) -> dict[str, Any]:
    """Write one shard per split (``{"train": docs, "val": docs}``, each doc a list of ids without
    EOS) and the directory's ``meta.json``; return the meta as written."""
    shards = []
    for name, docs in splits.items():
        with TokenShardWriter(
            out_dir,
            name,
            tokenizer_hash=tokenizer_hash,
            vocab_size=vocab_size,
            eos_token_id=eos_token_id,
        ) as writer:
            for ids in docs:
                writer.add_document(ids)
        shards.append(writer.close())
    write_token_meta(
        out_dir,
        shards,
        tokenizer_hash=tokenizer_hash,
        vocab_size=vocab_size,
        eos_token_id=eos_token_id,
        lineage=lineage,
    )
    return read_meta(out_dir, format=FORMAT, max_version=VERSION)


class TokenDataset:
    """Read one shard of a token directory with numpy memmaps.

    ``tokens`` (uint32, memmapped), ``doc_ends`` (uint64), ``num_tokens``, ``num_documents``,
    ``meta`` and ``document(i)`` (ids including the trailing EOS). Opening checks the meta, the
    file sizes and that the index ends at the last token, raising DataError naming the bad file;
    :meth:`validate` also scans every token id.
    """

    def __init__(self, dir: Path | str, split: str = "train") -> None:
        self.dir = Path(dir)
        self.meta = read_meta(self.dir, format=FORMAT, max_version=VERSION)
        names = [s.get("name") for s in self.meta.get("shards", [])]
        if split not in names:
            raise DataError(f"{self.dir}: no shard {split!r} (shards: {names}); pick another split")
        self.split = split
        self.shard = self.meta["shards"][names.index(split)]
        self.vocab_size = int(self.meta["vocab_size"])
        self.eos_token_id = int(self.meta["eos_token_id"])
        self.tokenizer_hash = str(self.meta["tokenizer_hash"])
        self.bin_path = self.dir / f"{split}.bin"
        self.idx_path = self.dir / f"{split}.idx"
        self.tokens = _memmap(self.bin_path, TOKEN_DTYPE)
        self.doc_ends = np.array(_memmap(self.idx_path, END_DTYPE), dtype=np.uint64)  # small: load
        self.num_tokens = int(self.tokens.size)
        self.num_documents = int(self.doc_ends.size)
        self._check_sizes()

    def _check_sizes(self) -> None:
        last_end = int(self.doc_ends[-1]) if self.num_documents else 0
        if last_end != self.num_tokens or self.num_tokens != self.shard.get("num_tokens"):
            raise DataError(
                f"{self.bin_path}: holds {self.num_tokens} tokens but the index ends at {last_end} "
                f"and meta.json says {self.shard.get('num_tokens')}; the shard is truncated, "
                "rewrite it"
            )
        if self.num_documents != self.shard.get("num_documents"):
            raise DataError(
                f"{self.idx_path}: holds {self.num_documents} documents, meta.json says "
                f"{self.shard.get('num_documents')}; rewrite the shard"
            )
        if self.num_documents > 1 and bool(np.any(np.diff(self.doc_ends.astype(np.int64)) < 0)):
            raise DataError(f"{self.idx_path}: document ends are not increasing; rewrite the shard")

    def __len__(self) -> int:
        return self.num_documents

    def document(self, i: int) -> np.ndarray:
        """Token ids of document ``i`` (0-based), ending with EOS, as a uint32 view."""
        if not 0 <= i < self.num_documents:
            raise IndexError(f"document {i} out of range [0, {self.num_documents})")
        start = int(self.doc_ends[i - 1]) if i else 0
        return self.tokens[start : int(self.doc_ends[i])]

    def check_compatible(self, tokenizer_hash: str, vocab_size: int) -> None:
        """Raise DataError naming this directory unless it was tokenized by the tokenizer with
        ``tokenizer_hash`` and its ids fit a model vocabulary of ``vocab_size``."""
        if tokenizer_hash != self.tokenizer_hash:
            raise DataError(
                f"{self.dir}: tokenized with tokenizer {self.tokenizer_hash[:12]}…, not the "
                f"model's {tokenizer_hash[:12]}…; re-tokenize the data with the model's tokenizer"
            )
        if self.vocab_size > vocab_size:
            raise DataError(
                f"{self.dir}: vocab_size {self.vocab_size} exceeds the model's {vocab_size}; "
                "re-tokenize or use a model with a larger vocabulary"
            )

    def validate(self) -> None:
        """Scan every token: raise DataError naming the ``.bin`` file for an id ≥ ``vocab_size``
        or a document that does not end with EOS."""
        for start in range(0, self.num_tokens, _SCAN_TOKENS):
            chunk = self.tokens[start : start + _SCAN_TOKENS]
            if chunk.size and int(chunk.max()) >= self.vocab_size:
                pos = start + int(np.argmax(chunk >= self.vocab_size))
                raise DataError(
                    f"{self.bin_path}: token id {int(self.tokens[pos])} at position {pos} is not "
                    f"below vocab_size {self.vocab_size}; re-tokenize with the matching tokenizer"
                )
        if self.num_documents:
            last = self.tokens[self.doc_ends.astype(np.int64) - 1]
            if bool(np.any(last != self.eos_token_id)):
                doc = int(np.argmax(last != self.eos_token_id))
                raise DataError(
                    f"{self.bin_path}: document {doc} does not end with eos_token_id "
                    f"{self.eos_token_id}; the index does not match the tokens, rewrite the shard"
                )


def _memmap(path: Path, dtype: np.dtype) -> np.ndarray:
    """Memmap a flat little-endian array, or an empty array for an empty file (numpy cannot map
    zero bytes). Raises DataError naming the file when it is missing or its size is not a
    multiple of the item size."""
    if not path.is_file():
        raise DataError(f"{path}: missing; the token directory is incomplete, rewrite it")
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise DataError(
            f"{path}: {size} bytes is not a multiple of {dtype.itemsize} ({dtype.name}); "
            "the file is truncated, rewrite the shard"
        )
    if size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")
