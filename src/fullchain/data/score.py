"""Model-based scoring: a document's perplexity under a fullchain checkpoint (an HF folder).

The score is ``exp(mean next-token cross-entropy)`` over the first ``max_tokens`` tokens; the
pipeline stores it as ``meta.perplexity`` and can drop documents above a threshold.
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
        import torch
        ids = self.tok.encode(text)[: self.max_tokens]
        if len(ids) < 2:
            return math.inf
        x = torch.tensor([ids], device=self.device)
        with torch.no_grad():
            logits = self.model(x)[0, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits, x[0, 1:])
        return float(torch.exp(loss))
