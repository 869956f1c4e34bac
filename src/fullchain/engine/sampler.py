"""The sampler: logits of the sampling rows in, one token (and its log-probs) per row out.

Log-probs are those of the raw model distribution. Then logit bias, min_tokens, repetition /
presence / frequency penalties; greedy rows take the argmax (all at once), the others sample
row by row with their own generator, with exactly the operations of the reference loop
(`fullchain.generate.sample_next`), so that a seeded request draws the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fullchain.engine.scheduler import Sequence

TopList = list[tuple[int, float]]


@dataclass
class Sampled:
    token_id: int
    logprob: float | None = None  # of the chosen token, when the request asked for logprobs
    top: TopList | None = None


def top_logprobs(logprobs: torch.Tensor, k: int) -> TopList:
    """The k most likely (token id, log-prob) pairs of one row."""
    if k <= 0:
        return []
    values, ids = torch.topk(logprobs, min(k, logprobs.numel()))
    return list(zip(ids.tolist(), values.tolist()))


def prompt_logprob_entries(logits: torch.Tensor, seq: Sequence, start: int) -> None:
    """Fill seq.prompt_logprobs for the prompt tokens predicted by rows start .. start+len-1:
    row p gives the log-prob of token p + 1 (a position already filled is left alone)."""
    k = seq.params.prompt_logprobs or 0
    logprobs = torch.log_softmax(logits, dim=-1)
    for r in range(logprobs.shape[0]):
        target = start + r + 1
        if target >= seq.prompt_len or target in seq.prompt_logprobs:
            continue
        if target < seq.params.prompt_logprobs_from:
            continue
        token = seq.token_ids[target]
        seq.prompt_logprobs[target] = (float(logprobs[r, token]), top_logprobs(logprobs[r], k))


def _penalize(row: torch.Tensor, seq: Sequence) -> torch.Tensor:
    p = seq.params
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(seq.token_ids)), dtype=torch.long)
        vals = row[seen]
        row[seen] = torch.where(vals > 0, vals / p.repetition_penalty,
                                vals * p.repetition_penalty)
    if (p.presence_penalty or p.frequency_penalty) and seq.num_output:
        counts = torch.bincount(torch.tensor(seq.output_ids), minlength=row.numel())
        counts = counts[: row.numel()].to(row.dtype)
        row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(row.dtype)
    return row


def _process(row: torch.Tensor, seq: Sequence) -> torch.Tensor:
    p = seq.params
    if p.logit_bias:
        ids = torch.tensor(list(p.logit_bias.keys()), dtype=torch.long)
        row[ids] += torch.tensor(list(p.logit_bias.values()), dtype=row.dtype)
    if seq.num_output < p.min_tokens and seq.stop_ids:
        row[torch.tensor(sorted(seq.stop_ids), dtype=torch.long)] = float("-inf")
    row = _penalize(row, seq)
    if p.logits_processor is not None:
        row = p.logits_processor(seq.output_ids, row)
    return row


def _draw(row: torch.Tensor, seq: Sequence, generator: torch.Generator | None) -> int:
    p = seq.params
    logits = row.float() / p.temperature
    if p.top_k:
        kth = torch.topk(logits, min(p.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if p.min_p > 0:
        probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
    if p.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest head whose mass reaches top_p (the first token always stays)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= p.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def needs_processing(seq: Sequence) -> bool:
    p = seq.params
    return bool(p.logit_bias or p.min_tokens or p.logits_processor or p.repetition_penalty != 1.0
                or p.presence_penalty or p.frequency_penalty)


def sample(logits: torch.Tensor, seqs: list[Sequence], *,
           generator: torch.Generator) -> list[Sampled]:
    """One token per row of `logits` [N, vocab] (fp32), for the sequences `seqs` in order."""
    if not seqs:
        return []
    want_lp = [s.params.logprobs is not None for s in seqs]
    logprobs = torch.log_softmax(logits, dim=-1) if any(want_lp) else None
    for i, seq in enumerate(seqs):
        if needs_processing(seq):
            logits[i] = _process(logits[i].clone(), seq)
    greedy = torch.argmax(logits, dim=-1).tolist()
    out = []
    for i, seq in enumerate(seqs):
        token = greedy[i] if seq.params.greedy else _draw(
            logits[i], seq, seq.generator or generator)
        s = Sampled(token)
        if want_lp[i]:
            s.logprob = float(logprobs[i, token])
            s.top = top_logprobs(logprobs[i], seq.params.logprobs)
        out.append(s)
    return out
