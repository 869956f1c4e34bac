"""Cross-entropy fused with the LM head, computed in row chunks.

The full logits tensor ([tokens, vocab], often the largest activation of a small model) is never
materialised: each chunk's logits turn into their gradient (softmax - one-hot) in place, and the
gradients for the hidden states and the head weight are accumulated during the forward pass.
"""

from __future__ import annotations

import torch

from fullchain.model.linear import matmul_t

IGNORE_INDEX = -100


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk_rows: int) -> torch.Tensor:
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        valid = targets != IGNORE_INDEX
        count = int(valid.sum())
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.zeros_like(hidden) if needs_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs_grad else None
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start:start + chunk_rows]
            t = targets[start:start + chunk_rows]
            ok = valid[start:start + chunk_rows]
            logits = matmul_t(h, weight).float()  # [rows, vocab]
            lse = torch.logsumexp(logits, dim=-1)
            rows = torch.arange(h.shape[0], device=h.device)
            safe_t = t.clamp_min(0)
            total += ((lse - logits[rows, safe_t]) * ok).sum()
            if not needs_grad:
                continue
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            grad[rows, safe_t] -= 1.0
            grad.mul_(ok[:, None])
            grad = grad.to(h.dtype)
            grad_hidden[start:start + chunk_rows] = matmul_t(grad, weight.t())
            grad_weight.addmm_(grad.t().float(), h.float())
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.count = max(count, 1)
        ctx.weight_dtype = weight.dtype
        return total / ctx.count

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_out / ctx.count
        gh = grad_hidden * scale.to(grad_hidden.dtype) if ctx.needs_input_grad[0] else None
        gw = (grad_weight * scale).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        return gh, gw, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         chunk_rows: int = 1024) -> torch.Tensor:
    """Mean next-token loss of `hidden @ weight.T` against `targets` (IGNORE_INDEX rows skipped).

    hidden [..., C], weight [vocab, C], targets [...]. Equal to
    `F.cross_entropy(hidden @ weight.T, targets, ignore_index=-100)` up to float rounding.
    """
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    return _LinearCrossEntropy.apply(flat_h, weight, targets.reshape(-1), chunk_rows)
