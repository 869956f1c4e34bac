"""Training a byte-level BPE tokenizer with HF `tokenizers`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from fullchain.config import TokenizerError
from fullchain.tokenizer.hf_backend import HFBackend
from fullchain.tokenizer.tokenizer import Tokenizer

# GPT-4 / Llama-3 split regex with one change: `\p{N}` instead of `\p{N}{1,3}`, so every digit is
# its own pre-token and numbers tokenize digit by digit (arithmetic learns better that way).
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _as_files(source) -> list[str] | None:
    """File paths when `source` is a list/tuple of Path objects or of strings naming existing
    files; None when it is text."""
    if not isinstance(source, (list, tuple)) or not source:
        return None
    if all(isinstance(s, os.PathLike) for s in source):
        return [str(s) for s in source]
    if all(isinstance(s, str) and "\n" not in s and os.path.isfile(s) for s in source):
        return list(source)
    return None


def _check_files(files: Sequence[str]) -> None:
    for name in files:
        if not Path(name).is_file():
            raise TokenizerError(f"training file {name} does not exist; check the path")


def train_bpe(
    texts_or_files: Iterable[str] | Sequence[str | os.PathLike],
    *,
    vocab_size: int,
    special_tokens: Sequence[str],
    bos_token: str | None = None,
    eos_token: str | None = None,
    pad_token: str | None = None,
    add_bos_token: bool | None = None,
    min_frequency: int = 2,
    chat_template: str | None = None,
    model_max_length: int | None = None,
) -> Tokenizer:
    """Train a byte-level BPE tokenizer (no unknown token: every byte is in the alphabet).

    `texts_or_files` is an iterable of documents, or a list of Path objects / existing file
    names (read line by line). `special_tokens` get the first ids, in order, and are matched
    whole in text; bos/eos/pad name which of them play those roles (any not listed is added),
    e.g. ``special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos_token=
    "<|endoftext|>"`` for a ChatML model without BOS. When `add_bos_token` (default: whether
    `bos_token` is set), `encode(..., add_special_tokens=True)` prepends BOS, as Llama 3 does.
    `vocab_size` counts the special tokens and must exceed 256 + their number.
    """
    specials = _specials(special_tokens, [bos_token, eos_token, pad_token], vocab_size)
    backend = _byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    _train(backend, texts_or_files, trainer)
    add_bos = bool(bos_token) if add_bos_token is None else add_bos_token
    backend.post_processor = _post_processor(backend, bos_token if add_bos else None)
    return Tokenizer(
        HFBackend(backend), bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
        chat_template=chat_template, model_max_length=model_max_length,
    )


def _specials(listed: Sequence[str], roles: Sequence[str | None], vocab_size: int) -> list[str]:
    """The listed special tokens, then any role token not among them; checks vocab_size."""
    specials = list(dict.fromkeys([*listed, *(t for t in roles if t)]))
    if vocab_size <= 256 + len(specials):
        raise TokenizerError(
            f"vocab_size={vocab_size} leaves no room for merges: it must exceed 256 byte tokens "
            f"+ {len(specials)} special tokens; raise vocab_size"
        )
    return specials


def _train(backend: tokenizers.Tokenizer, source, trainer) -> None:
    files = _as_files(source)
    if files is not None:
        _check_files(files)
        backend.train(files, trainer)
    else:
        backend.train_from_iterator(iter(source), trainer)


def _byte_level_bpe() -> tokenizers.Tokenizer:
    """An untrained BPE with the split regex, byte-level mapping and byte-level decoder."""
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    return backend


def _post_processor(backend: tokenizers.Tokenizer, bos_token: str | None):
    """Llama 3's layout: ByteLevel offsets untouched, then BOS prepended when asked."""
    steps = [processors.ByteLevel(trim_offsets=False)]
    if bos_token:
        bos = (bos_token, backend.token_to_id(bos_token))
        steps.append(processors.TemplateProcessing(
            single=f"{bos_token}:0 $A:0", pair=f"{bos_token}:0 $A:0 {bos_token}:1 $B:1",
            special_tokens=[bos],
        ))
    return processors.Sequence(steps)
