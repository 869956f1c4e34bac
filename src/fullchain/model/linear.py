"""Linear layers whose fp32 CPU products go through oneDNN instead of PyTorch's default GEMM.

PyTorch computes an fp32 `F.linear` on the CPU with MKL's sgemm. On the AMD EPYC (Zen 3) of our
CI machine, oneDNN's product (the one PyTorch ships for its bf16 and compiled CPU paths, reached
through `torch.ops.mkldnn._linear_pointwise`) runs most shapes faster: medians of interleaved
timings, 2 threads, 1.03-1.33x on the tiny model's training products, 0.93-1.15x on the 135M
shape's prompt products, 1.08-1.10x on a 2048² square (`bench/bench_gemm.py`). The weight
gradient's product (both operands transposed) stays with PyTorch, where oneDNN was 0.6-0.7x.

`Linear` is an `nn.Linear` (same parameters and state-dict keys, so PEFT and HF checkpoints see
a plain linear layer) whose forward takes this path when it applies: CPU, fp32 input and weight,
no autocast, not inside `torch.compile` (which brings its own kernels), and the op present in this
PyTorch build. Everything else is `F.linear`, unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

_state: dict[str, bool] = {"enabled": True}


def set_onednn(enabled: bool) -> None:
    """Turn the oneDNN path on or off for the whole process (on by default)."""
    _state["enabled"] = enabled


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN's linear product (checked once)."""
    if "available" not in _state:
        try:
            op = torch.ops.mkldnn._linear_pointwise
            y = op(torch.ones(1, 2), torch.ones(3, 2), None, "none", [], "")
            _state["available"] = (bool(torch.backends.mkldnn.is_available())
                                   and torch.equal(y, torch.full((1, 3), 2.0)))
        except (AttributeError, RuntimeError):
            _state["available"] = False
    return _state["available"]


def _applies(*tensors: torch.Tensor) -> bool:
    return (_state["enabled"] and onednn_available()
            and all(type(t) in (torch.Tensor, nn.Parameter) and t.device.type == "cpu"
                    and t.dtype == torch.float32 for t in tensors)
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())


def _product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., in] @ weight[out, in].T (+ bias) through oneDNN; weight may be a transposed view."""
    rows = x.reshape(-1, x.shape[-1])
    y = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")
    return y.view(*x.shape[:-1], weight.shape[0])


def matmul_t(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`x @ weight.T` without autograd (inside other autograd functions), oneDNN where it
    applies."""
    if _applies(x, weight) and x.numel() > 0:
        return _product(x, weight, None)
    return x @ weight.t()


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _product(x, weight, bias)

    @staticmethod
    @once_differentiable  # oneDNN's product has no derivative of its own
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _product(grad, weight.t(), None)  # grad @ weight
        flat = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_w = flat.t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = flat.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
           ) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, through oneDNN where it applies (see the module's note)."""
    if (x.numel() > 0 and weight.is_contiguous()
            and _applies(x, weight, *([bias] if bias is not None else []))):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` whose fp32 CPU products go through oneDNN (see the module's note)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
