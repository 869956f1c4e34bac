"""Documents JSONL -> a byte-level BPE tokenizer; documents -> token shards (train/val)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from fullchain.data.writers import read_docs
from fullchain.formats.lineage import make_lineage
from fullchain.formats.tokens import write_token_dataset
from fullchain.tokenizer import Tokenizer, get_builtin_template, train_bpe

# the embedded default's special tokens: EOS between documents, ChatML turns, tool calls
DEFAULT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>",
                    "<tool_response>", "</tool_response>"]


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


def _is_val(doc_id: str, val_fraction: float, seed: int) -> bool:
    """A stable split by document id: the same document lands in the same split on every run."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < val_fraction


def tokenize_documents(documents: list[Path], tokenizer_dir: Path, out: Path, *,
                       val_fraction: float = 0.02, seed: int = 0) -> dict:
    """Write `out/{train,val}.bin|.idx` + meta.json, and the tokenizer to `out/tokenizer`."""
    tok = Tokenizer.from_dir(tokenizer_dir)
    train, val = [], []
    for path in documents:
        for doc in read_docs(path):
            ids = tok.encode(doc["text"])
            (val if _is_val(str(doc["id"]), val_fraction, seed) else train).append(ids)
    lineage = make_lineage(stage="tokenize", inputs=[*documents, tokenizer_dir],
                           config={"val_fraction": val_fraction}, seed=seed)
    meta = write_token_dataset(out, {"train": train, "val": val},
                               tokenizer_hash=tok.content_hash(), vocab_size=tok.vocab_size,
                               eos_token_id=tok.eos_token_id, lineage=lineage)
    tok.save(out / "tokenizer")
    return meta


def tokenize_pipeline_output(cfg) -> dict:
    """The pipeline's tokenize step: train a tokenizer on the cleaned documents (unless
    ``tokenize.tokenizer`` names one) and write ``<out>/tokens``."""
    from fullchain.data.writers import document_files
    out = Path(cfg.out)
    files = document_files(out)
    tok_dir = Path(cfg.tokenize.tokenizer) if cfg.tokenize.tokenizer else out / "tokenizer"
    if not cfg.tokenize.tokenizer:
        train_tokenizer(files, tok_dir, vocab_size=cfg.tokenize.vocab_size)
    meta = tokenize_documents(files, tok_dir, out / "tokens",
                              val_fraction=cfg.tokenize.val_fraction, seed=cfg.tokenize.seed)
    return {"num_tokens": meta["num_tokens"], "num_documents": meta["num_documents"],
            "tokenizer_hash": meta["tokenizer_hash"], "shards": meta["shards"]}
