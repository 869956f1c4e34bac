"""Tokenizers for fullchain models: HF `tokenizer.json` and sentencepiece `tokenizer.model`
backends behind one `Tokenizer`, byte-level BPE training, chat templates rendered exactly as
transformers renders them (with an assistant-only loss mask), and streaming detokenization."""

from fullchain.tokenizer.stream import StreamDecoder
from fullchain.tokenizer.templates import BUILTIN_TEMPLATES, get_builtin_template
from fullchain.tokenizer.tokenizer import END_OF_TURN_TOKENS, Tokenizer
from fullchain.tokenizer.train import train_bpe

__all__ = [
    "BUILTIN_TEMPLATES",
    "END_OF_TURN_TOKENS",
    "StreamDecoder",
    "Tokenizer",
    "get_builtin_template",
    "train_bpe",
]
