"""Model-based scoring: a document's perplexity under a fullchain checkpoint (an HF folder).

The score is ``exp(mean next-token cross-entropy)`` over the first ``max_tokens`` tokens; the
pipeline stores it as ``meta.perplexity`` and can drop documents above a threshold. Documents are
scored in batches: sorted by length, right-padded, with the padding masked out of each mean (the
model is causal, so padding after a document never changes its logits).
"""

from __future__ import annotations

import math


class PerplexityScorer:
    def __init__(self, model_dir: str, *, max_tokens: int = 512, device: str = "cpu") -> None:
        from fullchain.checkpoint.pretrained import load_pretrained
        self.model, self.tok = load_pretrained(model_dir, dtype="float32", device=device)
        self.model.eval()
        self.device = device
        limit = getattr(self.model.config, "max_position_embeddings", max_tokens)
        self.max_tokens = min(max_tokens, limit)

    def perplexity(self, text: str) -> float:
        """Perplexity of ``text`` (inf when it has fewer than two tokens)."""
        return self.perplexities([text], batch_size=1)[0]

    def perplexities(self, texts: list[str], *, batch_size: int = 8) -> list[float]:
        """Perplexity of each text, in order (inf for those with fewer than two tokens), run
        ``batch_size`` texts per forward pass; equal to :meth:`perplexity` of each to float
        rounding."""
        ids = [seq[: self.max_tokens] for seq in self.tok.encode_batch(texts)]
        out = [math.inf] * len(texts)
        order = sorted((i for i, seq in enumerate(ids) if len(seq) >= 2), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            group = order[start : start + batch_size]
            for i, ppl in zip(group, self._batch([ids[i] for i in group])):
                out[i] = ppl
        return out

    def _batch(self, seqs: list[list[int]]) -> list[float]:
        import torch
        import torch.nn.functional as F
        lens = torch.tensor([len(s) for s in seqs])
        x = torch.zeros((len(seqs), int(lens.max())), dtype=torch.long)  # pad: any valid id
        for row, seq in enumerate(seqs):
            x[row, : len(seq)] = torch.tensor(seq)
        x = x.to(self.device)
        with torch.no_grad():
            logits = self.model(x)[:, :-1].float()  # [B, T-1, V]
        nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")  # [B, T-1]
        targets = (lens - 1).to(nll.device)
        mask = torch.arange(nll.shape[1], device=nll.device)[None, :] < targets[:, None]
        mean = (nll * mask).sum(dim=1) / targets
        return torch.exp(mean).tolist()
