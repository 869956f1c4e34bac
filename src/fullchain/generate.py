"""The reference generation loop: a contiguous KV cache, greedy or sampled decoding, stop ids and
stop strings, and streaming text that never splits a multi-byte character.

It is simple on purpose: the serving engine (`fullchain.engine`) is tested against it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from fullchain.config import FullchainError
from fullchain.model import KVCache, Transformer
from fullchain.tokenizer.stream import StopText, StreamDecoder


@dataclass(kw_only=True)
class SamplingParams:
    """How to pick each next token. temperature 0 is greedy (top_k/top_p then do nothing)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: Sequence[int] = field(default_factory=tuple)
    stop: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise FullchainError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise FullchainError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise FullchainError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise FullchainError(f"top_k must be >= 0, got {self.top_k}")


def sample_next(logits: torch.Tensor, params: SamplingParams,
                generator: torch.Generator | None) -> int:
    """One token from logits [vocab] (greedy when temperature is 0)."""
    if params.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.float() / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest head whose mass reaches top_p (the first token always stays)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


@torch.no_grad()
def generate_ids(model: Transformer, prompt_ids: Sequence[int], params: SamplingParams, *,
                 use_cache: bool = True) -> Iterator[int]:
    """Yield new token ids one by one; a stop token id is yielded last, then the loop ends."""
    if not prompt_ids:
        raise FullchainError("the prompt is empty: give at least one token")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    ids = torch.tensor([list(prompt_ids)], device=device)
    stop_ids = set(params.stop_token_ids)
    cache = None
    if use_cache:
        cfg = model.config
        cache = KVCache(num_layers=cfg.num_hidden_layers, batch_size=1,
                        num_kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
                        max_seq_len=len(prompt_ids) + params.max_new_tokens,
                        dtype=next(model.parameters()).dtype, device=device)
    step_ids, start = ids, 0
    for _ in range(params.max_new_tokens):
        if cache is None:
            logits = model(ids)[0, -1]
        else:
            positions = torch.arange(start, start + step_ids.shape[1], device=device)[None]
            logits = model(step_ids, positions=positions, attention=cache.at(start))[0, -1]
            start += step_ids.shape[1]
        token = sample_next(logits, params, generator)
        yield token
        if token in stop_ids:
            return
        step_ids = torch.tensor([[token]], device=device)
        ids = torch.cat([ids, step_ids], dim=1)


def generate_text(model: Transformer, tokenizer, prompt_ids: Sequence[int],
                  params: SamplingParams) -> Iterator[str]:
    """Stream the continuation as text; stop strings are cut off and never shown."""
    decoder = StreamDecoder(lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
    stream = StopText(decoder, params.stop)
    for token in generate_ids(model, prompt_ids, params):
        if token in params.stop_token_ids:
            break
        chunk, hit = stream.push(token)
        if chunk:
            yield chunk
        if hit is not None:
            return
    tail = stream.flush()
    if tail:
        yield tail
