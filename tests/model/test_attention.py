"""Grouped-query attention without copies of the kv heads equals attention over repeated ones."""

import pytest
import torch
import torch.nn.functional as F

from fullchain.model.attention import DocumentAttention, causal, repeat_kv


def _inputs(heads=6, kv_heads=2, t=20, d=8):
    torch.manual_seed(0)
    q = torch.randn(2, heads, t, d, requires_grad=True)
    k = torch.randn(2, kv_heads, t, d, requires_grad=True)
    v = torch.randn(2, kv_heads, t, d, requires_grad=True)
    return q, k, v


def _repeated(q, k, v, **kwargs):
    h = q.shape[1]
    return F.scaled_dot_product_attention(q, repeat_kv(k, h), repeat_kv(v, h), **kwargs)


@pytest.mark.parametrize("kv_heads", [1, 2, 6])
def test_causal_equals_repeated_kv(kv_heads):
    q, k, v = _inputs(kv_heads=kv_heads)
    out = causal(0, q, k, v)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref = _repeated(q, k, v, is_causal=True)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_document_mask_equals_repeated_kv():
    q, k, v = _inputs()
    doc_ids = torch.tensor([[0] * 7 + [1] * 9 + [2] * 4, [0] * 20])
    attention = DocumentAttention(doc_ids)
    out = attention(0, q, k, v)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref = _repeated(q, k, v, attn_mask=attention.mask)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)
    # the first row's second document sees nothing of the first
    q2 = q.detach().clone()
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[0, :, :7] += 5.0
    v2[0, :, :7] -= 3.0
    torch.testing.assert_close(attention(0, q2, k2, v2)[0, :, 7:], out.detach()[0, :, 7:])
