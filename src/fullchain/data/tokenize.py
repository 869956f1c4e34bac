"""Documents JSONL -> a byte-level BPE tokenizer; documents -> token shards (train/val).

Tokenization runs one task per document file (``workers`` processes), each encoding its
documents in batches with the tokenizers library (Rust threads) and writing its train/val token
runs to a part file; the parts are then joined in file order, so the shards are byte-identical
whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fullchain.data.writers import read_docs
from fullchain.formats.lineage import make_lineage, read_meta
from fullchain.formats.tokens import FORMAT, VERSION, TokenShardWriter, write_token_meta
from fullchain.tokenizer import Tokenizer, get_builtin_template, train_bpe

# the embedded default's special tokens: EOS between documents, ChatML turns, tool calls
DEFAULT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>",
                    "<tool_response>", "</tool_response>"]
SPLITS = ("train", "val")
_ENCODE_DOCS = 1024  # documents per encode_batch call


def _texts(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        for doc in read_docs(path):
            yield doc["text"]


def train_tokenizer(documents: list[Path], out: Path, *, vocab_size: int,
                    template: str = "chatml") -> Tokenizer:
    """Train a byte-level BPE on the documents' text and save it (with a chat template) to `out`."""
    tok = train_bpe(_texts(documents), vocab_size=vocab_size, special_tokens=DEFAULT_SPECIALS,
                    bos_token=None, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.chat_template = get_builtin_template(template)
    tok.save(out)
    return Tokenizer.from_dir(out)


def _is_val(doc: dict, val_fraction: float, seed: int, val_sources: list[str] | None) -> bool:
    """A stable split by document id: the same document lands in the same split on every run.
    With ``val_sources``, only documents whose ``meta.source`` is one of them are held out."""
    if val_sources is not None and doc.get("meta", {}).get("source") not in val_sources:
        return False
    digest = hashlib.sha256(f"{seed}:{doc['id']}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < val_fraction


def _tokenize_file(path: str, tokenizer_dir: str, stem: str, split: tuple) -> int:
    """One worker task: encode the documents of ``path`` and write, per split, ``<stem>.<split>
    .tokens.npy`` (the ids back to back) and ``.lens.npy`` (each document's length); ``split``
    is (val_fraction, seed, val_sources, threads for the tokenizers pool). Returns the document
    count."""
    val_fraction, seed, val_sources, threads = split
    if threads:  # N worker processes each with an all-core Rust pool would oversubscribe
        os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    tok = Tokenizer.from_dir(tokenizer_dir)
    ids: dict[str, list[list[int]]] = {name: [] for name in SPLITS}
    docs = read_docs(path)
    while batch := list(itertools.islice(docs, _ENCODE_DOCS)):
        for doc, seq in zip(batch, tok.encode_batch([d["text"] for d in batch])):
            ids["val" if _is_val(doc, val_fraction, seed, val_sources) else "train"].append(seq)
    for name, seqs in ids.items():  # numpy arrays: a tenth of the memory of lists of ints
        flat = np.fromiter((t for seq in seqs for t in seq), dtype=np.int64,
                           count=sum(map(len, seqs)))
        np.save(f"{stem}.{name}.tokens.npy", flat)
        np.save(f"{stem}.{name}.lens.npy", np.array([len(s) for s in seqs], dtype=np.int64))
    return sum(len(seqs) for seqs in ids.values())


def _join_parts(parts: list[str], out: Path, name: str, tok: Tokenizer) -> dict:
    """Write shard ``name`` from the parts' token runs, in part order."""
    with TokenShardWriter(out, name, tokenizer_hash=tok.content_hash(),
                          vocab_size=tok.vocab_size, eos_token_id=tok.eos_token_id) as writer:
        for stem in parts:
            tokens = np.load(f"{stem}.{name}.tokens.npy")
            ends = np.cumsum(np.load(f"{stem}.{name}.lens.npy"))
            for start, end in zip([0, *ends[:-1].tolist()], ends.tolist()):
                writer.add_document(tokens[start:end])
    return writer.close()


def tokenize_documents(documents: list[Path], tokenizer_dir: Path, out: Path, *,
                       val_fraction: float = 0.02, seed: int = 0,
                       val_sources: list[str] | None = None, workers: int = 1) -> dict:
    """Write `out/{train,val}.bin|.idx` + meta.json, and the tokenizer to `out/tokenizer`, with
    ``workers`` processes over the document files; the output does not depend on ``workers``.
    ``val_sources`` limits the held-out documents to those sources (``meta.source``), so that
    validation measures one domain whatever else the corpus holds."""
    from fullchain.data.executor import run_tasks
    tok = Tokenizer.from_dir(tokenizer_dir)
    out = Path(out)
    tmp = out / "parts.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0
    parts = [str(tmp / f"{i:05d}") for i in range(len(documents))]
    split = (val_fraction, seed, val_sources, threads)
    tasks = [(i, (str(path), str(tokenizer_dir), parts[i], split))
             for i, path in enumerate(documents)]
    run_tasks(_tokenize_file, tasks, lambda key, count: None, workers=workers)
    shards = [_join_parts(parts, out, name, tok) for name in SPLITS]
    shutil.rmtree(tmp)
    lineage = make_lineage(stage="tokenize", inputs=[*documents, tokenizer_dir],
                           config={"val_fraction": val_fraction, "val_sources": val_sources},
                           seed=seed)
    write_token_meta(out, shards, tokenizer_hash=tok.content_hash(), vocab_size=tok.vocab_size,
                     eos_token_id=tok.eos_token_id, lineage=lineage)
    tok.save(out / "tokenizer")
    return read_meta(out, format=FORMAT, max_version=VERSION)


def tokenize_pipeline_output(cfg) -> dict:
    """The pipeline's tokenize step: train a tokenizer on the cleaned documents (unless
    ``tokenize.tokenizer`` names one) and write ``<out>/tokens`` with ``workers`` processes."""
    from fullchain.data.writers import document_files
    out = Path(cfg.out)
    files = document_files(out)
    tok_dir = Path(cfg.tokenize.tokenizer) if cfg.tokenize.tokenizer else out / "tokenizer"
    start = time.perf_counter()
    if not cfg.tokenize.tokenizer:
        train_tokenizer(files, tok_dir, vocab_size=cfg.tokenize.vocab_size)
    trained = time.perf_counter()
    meta = tokenize_documents(files, tok_dir, out / "tokens",
                              val_fraction=cfg.tokenize.val_fraction, seed=cfg.tokenize.seed,
                              val_sources=cfg.tokenize.val_sources, workers=cfg.workers)
    return {"num_tokens": meta["num_tokens"], "num_documents": meta["num_documents"],
            "tokenizer_hash": meta["tokenizer_hash"], "shards": meta["shards"],
            "seconds": {"train_tokenizer": trained - start,
                        "tokenize": time.perf_counter() - trained}}
