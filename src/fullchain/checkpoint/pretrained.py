"""A model folder's model and tokenizer together, checked against each other."""

from __future__ import annotations

import os

import torch

from fullchain.checkpoint.io import load_model
from fullchain.config import TokenizerError
from fullchain.model import Transformer
from fullchain.tokenizer import Tokenizer


def load_pretrained(path: str | os.PathLike, *, dtype: str | torch.dtype | None = "float32",
                    device: str | torch.device = "cpu") -> tuple[Transformer, Tokenizer]:
    """Weights and tokenizer of an HF folder; a tokenizer larger than the embedding is refused."""
    model = load_model(path, dtype=dtype, device=device)
    tok = Tokenizer.from_dir(path)
    if tok.vocab_size > model.config.vocab_size:
        raise TokenizerError(
            f"{path}: the tokenizer has {tok.vocab_size} tokens but the model's embedding has only "
            f"{model.config.vocab_size} rows (config.json vocab_size); they belong to different "
            "models")
    return model, tok
