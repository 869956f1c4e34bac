"""`fullchain.model.Linear`: fp32 CPU products through oneDNN, equal to `F.linear` (values and
gradients) and falling back to it wherever the oneDNN path does not apply."""

import pytest
import torch
import torch.nn.functional as F

from fullchain.model import linear as lin
from fullchain.model import preset
from fullchain.model.transformer import Transformer

pytestmark = pytest.mark.skipif(not lin.onednn_available(), reason="no oneDNN in this build")


@pytest.fixture
def calls(monkeypatch):
    """How many products went through oneDNN."""
    count = {"n": 0}
    product = lin._product

    def counted(*args):
        count["n"] += 1
        return product(*args)

    monkeypatch.setattr(lin, "_product", counted)
    return count


@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_equal_f_linear(calls, bias):
    layer = lin.Linear(48, 80, bias=bias)
    x = torch.randn(3, 37, 48, requires_grad=True)
    y = layer(x)
    grad = torch.randn_like(y)
    y.backward(grad)
    assert calls["n"] == 2  # the forward and the input gradient
    got = [x.grad, layer.weight.grad] + ([layer.bias.grad] if bias else [])

    x_ref = x.detach().clone().requires_grad_()
    w_ref = layer.weight.detach().clone().requires_grad_()
    b_ref = layer.bias.detach().clone().requires_grad_() if bias else None
    y_ref = F.linear(x_ref, w_ref, b_ref)
    y_ref.backward(grad)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    want = [x_ref.grad, w_ref.grad] + ([b_ref.grad] if bias else [])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_frozen_weight_gets_no_gradient(calls):
    layer = lin.Linear(16, 8).requires_grad_(False)
    x = torch.randn(5, 16, requires_grad=True)
    layer(x).sum().backward()
    assert layer.weight.grad is None and x.grad is not None
    torch.testing.assert_close(x.grad, layer.weight.sum(0).expand(5, 16), rtol=1e-5, atol=1e-6)


def test_falls_back_where_onednn_does_not_apply(calls):
    layer = lin.Linear(16, 8)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's bf16 product, as F.linear
        y = layer(x)
    assert y.dtype == torch.bfloat16
    assert torch.equal(layer.bfloat16()(x.bfloat16()),
                       F.linear(x.bfloat16(), layer.weight, layer.bias))
    layer.float()
    lin.set_onednn(False)
    try:
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    finally:
        lin.set_onednn(True)
    column_major = layer.weight.detach().t().contiguous().t()  # a transposed layout
    assert torch.equal(lin.linear(x, column_major), F.linear(x, column_major))
    assert lin.linear(torch.randn(0, 16), layer.weight).shape == (0, 8)
    assert calls["n"] == 0
    layer(x)
    assert calls["n"] == 1


def test_matmul_t_equals_the_product():
    x, w = torch.randn(33, 24), torch.randn(40, 24)
    torch.testing.assert_close(lin.matmul_t(x, w), x @ w.t(), rtol=1e-5, atol=1e-5)
    g = torch.randn(33, 40)  # a transposed weight, as the input gradients pass it
    torch.testing.assert_close(lin.matmul_t(g, w.t()), g @ w, rtol=1e-5, atol=1e-5)


def test_transformer_uses_it_with_plain_linear_state_dict(calls):
    model = Transformer(preset("tiny", vocab_size=64, num_hidden_layers=1))
    model.init_weights(seed=0)
    assert all(isinstance(m, torch.nn.Linear) for m in [model.lm_head,
                                                        model.model.layers[0].mlp.up_proj])
    reference = Transformer(model.config)
    for m in reference.modules():  # the same model with stock nn.Linear layers
        if isinstance(m, lin.Linear):
            m.__class__ = torch.nn.Linear
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(0, 64, (2, 12))
    torch.testing.assert_close(model(ids), reference(ids), rtol=1e-4, atol=1e-4)
    assert calls["n"] == 8  # seven projections and the LM head
