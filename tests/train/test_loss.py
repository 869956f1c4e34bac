"""The chunked LM-head cross-entropy equals the plain one, value and gradients."""

import pytest
import torch
import torch.nn.functional as F

from fullchain.train.loss import IGNORE_INDEX, linear_cross_entropy


@pytest.mark.parametrize("chunk_rows", [7, 64, 1000])
def test_matches_plain_cross_entropy(chunk_rows):
    hidden = torch.randn(3, 21, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (3, 21))
    targets[0, :5] = IGNORE_INDEX
    ref = F.cross_entropy((hidden @ weight.t()).flatten(0, 1), targets.flatten(),
                          ignore_index=IGNORE_INDEX)
    ref.backward()
    ref_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    ours = linear_cross_entropy(hidden, weight, targets, chunk_rows=chunk_rows)
    (ours * 1.0).backward()
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(hidden.grad, ref_grads[0], atol=1e-6)
    assert torch.allclose(weight.grad, ref_grads[1], atol=1e-6)


def test_no_grad_path_and_scaled_backward():
    hidden = torch.randn(10, 8)
    weight = torch.randn(12, 8)
    targets = torch.randint(0, 12, (10,))
    with torch.no_grad():
        value = linear_cross_entropy(hidden, weight, targets)
    assert torch.allclose(value, F.cross_entropy(hidden @ weight.t(), targets), atol=1e-6)
    w = weight.clone().requires_grad_()
    (3 * linear_cross_entropy(hidden, w, targets)).backward()
    w2 = weight.clone().requires_grad_()
    (3 * F.cross_entropy(hidden @ w2.t(), targets)).backward()
    assert torch.allclose(w.grad, w2.grad, atol=1e-6)
