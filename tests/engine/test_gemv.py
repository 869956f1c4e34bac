"""The decode kernel: equal to F.linear, used by the engine on the CPU, and a clean fallback."""

import logging

import pytest
import torch
import torch.nn.functional as F

from fullchain.engine import Engine, EngineConfig, SamplingParams, gemv
from fullchain.engine.gemv import DecodeLinear
from fullchain.model import ModelConfig, Transformer

needs_kernel = pytest.mark.skipif(not gemv.load(), reason="no C++ compiler for the decode kernel")


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize("out_features,in_features", [(64, 64), (7, 13), (130, 96), (5, 200)])
def test_kernel_equals_linear(dtype, rows, out_features, in_features):
    torch.manual_seed(rows)
    w = torch.randn(out_features, in_features).to(dtype)
    x = torch.randn(2, rows, in_features).to(dtype)  # leading dims are flattened and restored
    layer = DecodeLinear(in_features, out_features, bias=False)
    layer.weight.data = w
    y = layer(x)
    ref = F.linear(x.float(), w.float())
    assert y.shape == ref.shape and y.dtype == dtype
    if rows * 2 <= gemv.MAX_ROWS:  # through the kernel: fp32 sums in another order
        tol = 1e-5 if dtype == torch.float32 else 1e-2  # bf16: the output's own rounding
        assert ((y.float() - ref).abs().max() / ref.abs().max()).item() < tol
    else:
        assert torch.equal(y, F.linear(x, w))


def _model() -> Transformer:
    cfg = ModelConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, intermediate_size=128,
                      max_position_embeddings=128)
    model = Transformer(cfg)
    model.init_weights(seed=0)
    return model


def _greedy(model: Transformer, config: EngineConfig) -> list[list[int]]:
    prompts = [[1, 2, 3, 4, 5], [7, 8, 9], [10, 11, 12, 13, 14, 15, 16]]
    out = Engine(model, None, config).generate(prompts, SamplingParams(max_tokens=12,
                                                                        ignore_eos=True))
    return [o.outputs[0].token_ids for o in out]


@needs_kernel
def test_engine_swaps_linears_and_keeps_the_weights():
    model = _model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with_kernel = _greedy(model, EngineConfig())
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m) is DecodeLinear and m.weight.is_contiguous() for m in linears)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    # an engine without the kernel re-lays the same model column-major: same greedy tokens
    without = _greedy(model, EngineConfig(decode_kernel=False))
    assert all(type(m) is torch.nn.Linear and not m.weight.is_contiguous() for m in linears)
    assert with_kernel == without
    _greedy(model, EngineConfig())  # and back again: row-major for the kernel
    assert all(type(m) is DecodeLinear and m.weight.is_contiguous() for m in linears)


def test_no_compiler_falls_back_to_linear_with_one_warning(monkeypatch, caplog):
    from torch.utils import cpp_extension

    def fail(*args, **kwargs):
        raise RuntimeError("Error building extension 'fullchain_gemv': g++ not found")

    monkeypatch.setattr(gemv, "_state", {})
    monkeypatch.setattr(cpp_extension, "load", fail)
    model = _model()
    with caplog.at_level(logging.WARNING, logger="fullchain.engine.gemv"):
        tokens = _greedy(model, EngineConfig())
        _greedy(model, EngineConfig())
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "could not be built" in caplog.records[0].message
    assert all(len(t) == 12 for t in tokens)
    assert not any(isinstance(m, DecodeLinear) for m in model.modules())
