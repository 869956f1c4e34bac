"""Readers and writers of the hand-over files every stage shares: documents JSONL, chat JSONL,
token shards, and the ``meta.json`` lineage record of each output directory."""

from fullchain.formats.chat import read_chat, to_messages_row, write_chat
from fullchain.formats.documents import read_documents, write_documents
from fullchain.formats.lineage import hash_path, make_lineage, read_meta, write_meta
from fullchain.formats.tokens import (
    TokenDataset,
    TokenShardWriter,
    write_token_dataset,
    write_token_meta,
)

__all__ = [
    "TokenDataset",
    "TokenShardWriter",
    "hash_path",
    "make_lineage",
    "read_chat",
    "read_documents",
    "read_meta",
    "to_messages_row",
    "write_chat",
    "write_documents",
    "write_meta",
    "write_token_dataset",
    "write_token_meta",
]
