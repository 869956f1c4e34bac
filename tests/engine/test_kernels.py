"""The decode kernels: equal to PyTorch's operators, used by the engine on the CPU, and a clean
fallback."""

import logging
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from fullchain.engine import Engine, EngineConfig, SamplingParams, kernels
from fullchain.engine.kernels import DecodeLinear
from fullchain.engine.kv_quant import quantize as quantize_kv
from fullchain.model import ModelConfig, Transformer
from fullchain.model.linear import linear

# only a machine without a C++ compiler may skip: where there is one, the kernels must build
HAS_COMPILER = any(shutil.which(c) for c in ("c++", "g++", "clang++"))
needs_kernel = pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler for the kernels")


@needs_kernel
def test_kernels_build_where_a_compiler_is():
    assert kernels.load()


@needs_kernel
def test_a_build_that_was_stopped_does_not_block_the_next():
    """torch's lock file, left in the build folder by a build that was killed, is removed with a
    warning: torch itself would wait for it forever (a server killed while building its kernels
    hung every later start)."""
    assert kernels.load()
    stale = kernels.build_directory(kernels.extension_name()) / "lock"
    stale.touch()
    run = subprocess.run([sys.executable, "-c", "from fullchain.engine import kernels; "
                          "assert kernels.load()"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "left by a build of the decode kernels that was stopped" in run.stderr
    assert not stale.exists()


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 12, 20, 40])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("out_features,in_features", [(64, 64), (7, 13), (130, 96), (5, 200)])
def test_kernel_equals_linear(dtype, rows, bias, out_features, in_features):
    assert kernels.load()
    torch.manual_seed(rows)
    w = torch.randn(out_features, in_features).to(dtype)
    x = torch.randn(2, rows, in_features).to(dtype)  # leading dims are flattened and restored
    layer = DecodeLinear(in_features, out_features, bias=bias).to(dtype)
    layer.weight.data = w
    y = layer(x)
    ref = F.linear(x.float(), w.float(), None if layer.bias is None else layer.bias.float())
    assert y.shape == ref.shape and y.dtype == dtype
    emulated_bf16 = dtype == torch.bfloat16 and not kernels.native_bf16()
    if rows * 2 <= kernels.MAX_KERNEL_ROWS or emulated_bf16:  # sums in another order
        tol = 1e-5 if dtype == torch.float32 else 1e-2  # bf16: the output's own rounding
        assert ((y.float() - ref).abs().max() / ref.abs().max()).item() < tol
    else:  # beyond the kernel's rows: the model's own product (`fullchain.model.linear`)
        assert torch.equal(y, linear(x, w, layer.bias))
        torch.testing.assert_close(y, F.linear(x, w, layer.bias), rtol=1e-5, atol=1e-5)


def test_int8_weights_are_within_half_a_step_of_the_originals():
    torch.manual_seed(0)
    w = torch.randn(33, 70) * torch.logspace(-3, 1, 33)[:, None]  # rows of every magnitude
    w[5] = 0  # a row of zeros keeps a usable scale
    q, scale = kernels.quantize_weight(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and scale.shape == (33,)
    assert torch.equal(q.abs().amax(1)[torch.arange(33) != 5], torch.full((32,), 127,
                                                                          dtype=torch.int8))
    error = (q.float() * scale[:, None] - w).abs()
    assert (error <= scale[:, None] / 2 * (1 + 1e-6)).all() and scale[5] == 1


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("rows", [1, 3, 5, 12, 40, 65])  # rows, tiles, PyTorch's GEMM
@pytest.mark.parametrize("out_features,in_features", [(64, 64), (7, 13), (130, 96), (5, 200)])
def test_int8_linear_equals_its_dequantized_weight(kernel, rows, out_features, in_features,
                                                   monkeypatch):
    """`Int8Linear` computes x (q s)^T + b: through the kernel (the integers summed, then
    scaled) or, for long inputs and without the kernels, PyTorch's product of the dequantised
    weight."""
    if kernel and not (HAS_COMPILER and kernels.load()):
        pytest.skip("no C++ compiler for the kernels")
    if not kernel:
        monkeypatch.setattr(kernels, "_state", {"ok": False})
    torch.manual_seed(rows)
    linear = torch.nn.Linear(in_features, out_features)
    layer = kernels.Int8Linear(linear)
    x = torch.randn(2, rows, in_features)
    ref = F.linear(x, layer.dequantized(), linear.bias)
    with torch.no_grad():
        y = layer(x)
    assert y.shape == ref.shape and y.dtype == x.dtype
    assert ((y - ref).abs().max() / ref.abs().max()).item() < 1e-5
    close = F.linear(x, linear.weight, linear.bias)  # int8 stays near the original product
    assert ((y - close).abs().max() / close.abs().max()).item() < 0.05
    assert kernels.Int8Linear(linear.bfloat16())(x.bfloat16()).dtype == torch.bfloat16


def _paged(keys: list[torch.Tensor], block_size: int, num_blocks: int, seed: int):
    """Scatter each sequence's keys [L, KV, D] into shuffled blocks of a pool [KV, blocks,
    block_size, D]; returns the pool and the padded block tables."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_blocks, generator=gen).tolist()
    kv_heads, dim = keys[0].shape[1:]
    pool = torch.randn(kv_heads, num_blocks, block_size, dim, generator=gen)  # garbage
    widest = max(-(-len(k) // block_size) for k in keys)
    tables = torch.zeros(len(keys), widest, dtype=torch.long)
    for b, k in enumerate(keys):
        for j in range(-(-len(k) // block_size)):
            block = order.pop()
            tables[b, j] = block
            part = k[j * block_size:(j + 1) * block_size]
            pool[:, block, :len(part)] = part.transpose(0, 1)
    return pool, tables


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads,kv_heads,dim", [(4, 2, 16), (9, 3, 64), (2, 2, 12), (8, 2, 32),
                                                  (10, 2, 8)])  # 2, 3, 1, 4, 5 heads a kv head
def test_paged_attention_equals_sdpa(dtype, heads, kv_heads, dim):
    torch.manual_seed(heads)
    lens, block_size = [1, 5, 16, 17, 40], 8
    k = [torch.randn(n, kv_heads, dim).to(dtype) for n in lens]
    v = [torch.randn(n, kv_heads, dim).to(dtype) for n in lens]
    k_pool, tables = _paged(k, block_size, 32, seed=1)
    v_pool, _ = _paged(v, block_size, 32, seed=1)  # same seed: same blocks
    q = torch.randn(len(lens), heads, dim).to(dtype)
    out = kernels.paged_decode_attention(q, k_pool.to(dtype), v_pool.to(dtype), tables,
                                         torch.tensor(lens), block_size)
    assert out.shape == q.shape and out.dtype == dtype
    for b in range(len(lens)):
        keys = k[b].float().transpose(0, 1).repeat_interleave(heads // kv_heads, 0)  # [H, L, D]
        vals = v[b].float().transpose(0, 1).repeat_interleave(heads // kv_heads, 0)
        ref = F.scaled_dot_product_attention(q[b].float()[:, None], keys, vals)[:, 0]
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        assert (out[b].float() - ref).abs().max().item() < tol * ref.abs().max().item()


@needs_kernel
def test_paged_attention_rejects_lengths_and_blocks_beyond_the_table():
    q, pool = torch.randn(1, 2, 8), torch.randn(1, 4, 8, 8)
    with pytest.raises(RuntimeError, match="has 17 keys but 2 blocks of 8"):
        kernels.paged_decode_attention(q, pool, pool, torch.tensor([[0, 1]]),
                                       torch.tensor([17]), 8)
    with pytest.raises(RuntimeError, match="names block 4 of a pool of 4"):
        kernels.paged_decode_attention(q, pool, pool, torch.tensor([[0, 4]]),
                                       torch.tensor([9]), 8)
    with pytest.raises(RuntimeError, match="the caches hold blocks of 8 keys, not 4"):
        kernels.paged_decode_attention(q, pool, pool, torch.tensor([[0, 1]]),
                                       torch.tensor([5]), 4)
    with pytest.raises(RuntimeError, match=r"the caches \[KV, blocks, block_size, D\]"):
        kernels.paged_decode_attention(q, pool.view(32, 1, 8), pool.view(32, 1, 8),
                                       torch.tensor([[0, 1]]), torch.tensor([9]), 8)


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
        raise RuntimeError("Error building extension 'fullchain_kernels': g++ not found")

    monkeypatch.setattr(kernels, "_state", {})
    monkeypatch.setattr(cpp_extension, "load", fail)
    model = _model()
    with caplog.at_level(logging.WARNING, logger="fullchain.engine.kernels"):
        tokens = _greedy(model, EngineConfig())
        _greedy(model, EngineConfig())
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "could not be built" in caplog.records[0].message
    assert all(len(t) == 12 for t in tokens)
    assert not any(isinstance(m, DecodeLinear) for m in model.modules())


def _step_logits(model: Transformer, config: EngineConfig, *, fused: bool = True,
                 sequences: int = 3):
    """Prompts, then decode steps of all of them: the logits [sequences, vocab] of the first
    decode-only step (with `fused` False, through the modules even where the kernels are)."""
    engine = Engine(model, None, config)
    if not fused:
        engine.runner.fused = None
    run, seen = engine.runner.run, []

    def recording(chunks):
        logits, prompt_logits = run(chunks)
        if all(c.num_tokens == 1 for c in chunks) and not seen:
            seen.append(logits)
        return logits, prompt_logits

    engine.runner.run = recording
    prompts = [[1, 2, 3, 4, 5], [7, 8, 9], list(range(10, 30))]
    prompts = [[(t + 5 * i) % 90 + 1 for t in prompts[i % 3]] for i in range(sequences)]
    engine.generate(prompts, SamplingParams(max_tokens=3, ignore_eos=True))
    assert len(seen) == 1 and seen[0].shape[0] == sequences
    return seen[0], engine


@needs_kernel
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("sequences", [3, 7, 21])  # one region; row by row; register tiles
def test_fused_decode_layers_equal_the_modules(bias, sequences):
    """A decode step through one C++ call per layer gives the modules' logits (fp32), with
    q/k/v biases too (Qwen2)."""
    cfg = ModelConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, intermediate_size=128,
                      max_position_embeddings=128, qkv_bias=bias)
    model = Transformer(cfg)
    model.init_weights(seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    fused, engine = _step_logits(model, EngineConfig(), sequences=sequences)
    assert engine.runner.fused is not None
    modules, _ = _step_logits(model, EngineConfig(), fused=False, sequences=sequences)
    reference, plain = _step_logits(model, EngineConfig(decode_kernel=False),
                                    sequences=sequences)
    assert plain.runner.fused is None
    assert torch.allclose(fused, reference, atol=1e-4, rtol=1e-4)
    assert torch.allclose(modules, reference, atol=1e-4, rtol=1e-4)


def _dequantized_copy(model: Transformer) -> Transformer:
    """The same model with every linear and embedding weight replaced by its int8 round trip
    (fp32; tied weights stay tied): what an int8 engine computes, through PyTorch's own
    operators."""
    copy = Transformer(model.config)
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        for module in copy.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                q, scale = kernels.quantize_weight(module.weight)
                module.weight.copy_(q.float() * scale[:, None])  # in place: ties hold
    return copy


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("sequences", [1, 7, 21])  # one region; row by row; register tiles
def test_int8_engine_equals_the_dequantized_model(kernel, sequences):
    """An engine with quantization="int8" gives the decode logits and greedy tokens of the
    model whose weights are their int8 round trip, run on PyTorch's operators (through the
    fused layers and the modules alike); the embedding is int8 too."""
    if kernel and not HAS_COMPILER:
        pytest.skip("no C++ compiler for the kernels")
    model = _model()
    reference = _dequantized_copy(model)
    expected, _ = _step_logits(reference, EngineConfig(decode_kernel=False), sequences=sequences)
    config = EngineConfig(quantization="int8", decode_kernel=kernel)
    logits, engine = _step_logits(_model(), config, sequences=sequences)
    assert (engine.runner.fused is not None) == kernel
    lm_head, embed = engine.model.lm_head, engine.model.model.embed_tokens
    assert type(lm_head) is kernels.Int8Linear and type(embed) is kernels.Int8Embedding
    assert (embed.qweight is lm_head.qweight) == engine.model.config.tie_word_embeddings
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    if kernel:
        modules, _ = _step_logits(_model(), config, fused=False, sequences=sequences)
        torch.testing.assert_close(modules, expected, atol=1e-4, rtol=1e-4)
    assert _greedy(_model(), config) == _greedy(_dequantized_copy(_model()),
                                                EngineConfig(decode_kernel=False))


@needs_kernel
def test_int8_engine_on_a_bf16_model():
    """A bf16 model's weights quantise too: its norms stay bf16 and its embeddings come out in
    bf16, the fused layers give the modules' logits (both int8, bf16 activations between the
    modules' layers)."""
    model = _model().bfloat16()
    config = EngineConfig(quantization="int8")
    logits, engine = _step_logits(model, config, sequences=3)
    assert engine.runner.fused is not None and engine.runner.fused.scales
    assert engine.model.model.norm.weight.dtype == torch.bfloat16
    assert engine.model.model.embed_tokens(torch.tensor([1, 2])).dtype == torch.bfloat16
    modules, _ = _step_logits(model, config, fused=False, sequences=3)
    torch.testing.assert_close(logits, modules, atol=0.01, rtol=0.01)  # logits up to ~0.4


@pytest.mark.parametrize("tied", [True, False])
def test_int8_embedding_table(tied):
    """The embedding becomes int8 rows too: one table with a tied LM head (no second copy), its
    own otherwise; a lookup gives the rows' int8 round trip."""
    cfg = ModelConfig(vocab_size=96, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, intermediate_size=128,
                      max_position_embeddings=128, tie_word_embeddings=tied)
    model = Transformer(cfg)
    model.init_weights(seed=0)
    table = model.model.embed_tokens.weight.detach().clone()
    assert kernels.quantize(model, "int8") == 9  # 7 projections, the LM head, the embedding
    embed = model.model.embed_tokens
    assert (embed.qweight is model.lm_head.qweight) == tied
    assert not any(p.ndim == 2 for p in model.parameters())  # no fp32 matrix is left
    ids = torch.tensor([[3, 95, 0]])
    q, scale = kernels.quantize_weight(table)
    assert torch.equal(embed(ids), (q.float() * scale[:, None])[ids])
    assert ((embed(ids) - table[ids]).abs() <= scale[ids, None] / 2 * (1 + 1e-6)).all()


def test_unknown_quantization_is_refused():
    from fullchain.config import FullchainError
    with pytest.raises(FullchainError, match="'quantization' must be one of int8"):
        EngineConfig(quantization="int4")


@needs_kernel
def test_fused_decode_covers_only_plain_models():
    from fullchain.engine.kernels import FusedDecoder
    model = _model()
    assert kernels.use_decode_kernel(model) and FusedDecoder.of(model) is not None
    model.model.layers[1].mlp.up_proj = torch.nn.Sequential(model.model.layers[1].mlp.up_proj)
    assert FusedDecoder.of(model) is None  # a wrapped layer (an adapter): the modules run
    windowed = _model()
    windowed.config.sliding_window = 64
    assert kernels.use_decode_kernel(windowed) and FusedDecoder.of(windowed) is None
    hooked = _model()
    hooked.model.layers[0].mlp.register_forward_hook(lambda module, args, out: out * 2)
    assert kernels.use_decode_kernel(hooked) and FusedDecoder.of(hooked) is None


@pytest.mark.parametrize("kv_dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("decode_kernel", [True, False])
def test_a_half_precision_kv_pool_keeps_the_logits_close(kv_dtype, decode_kernel):
    """`kv_cache_dtype`: the pool in bf16/fp16 (half the memory), the same first decode step's
    logits within the keys' rounding, through the kernels (bf16; fp16 takes PyTorch's
    attention) and through PyTorch's operators."""
    if decode_kernel and not HAS_COMPILER:
        pytest.skip("no C++ compiler for the kernels")
    model = _model()
    reference, _ = _step_logits(model, EngineConfig(decode_kernel=decode_kernel))
    half, engine = _step_logits(model, EngineConfig(decode_kernel=decode_kernel,
                                                    kv_cache_dtype=kv_dtype))
    assert engine.runner.k_cache[0].dtype == getattr(torch, kv_dtype)
    fused = decode_kernel and kv_dtype == "bfloat16"
    assert (engine.runner.fused is not None) == fused
    assert not torch.equal(half, reference)  # the keys were rounded
    assert (half - reference).abs().max() < 0.01 * reference.abs().max()


def test_kv_cache_dtype_is_checked():
    from fullchain.config import FullchainError
    with pytest.raises(FullchainError, match="'kv_cache_dtype' must be one of"):
        EngineConfig(kv_cache_dtype="int4")


def _layer_inputs(cfg: ModelConfig, pool_dtype: torch.dtype, slots: list[int]):
    """`decode_layer`'s arguments for one token of len(slots) sequences, each sequence's only
    key at its slot (blocks of 4), weights of a random first layer, an empty pool."""
    model = Transformer(cfg)
    model.init_weights(seed=0)
    kernels.use_decode_kernel(model)
    weights, biases = kernels.FusedDecoder(model).weights[:9], [None] * 7
    t, d = len(slots), cfg.head_dim
    pool = lambda: torch.zeros(cfg.num_key_value_heads, 16, 4, d, dtype=pool_dtype)  # noqa: E731
    x, cos, sin = torch.randn(t, cfg.hidden_size), torch.rand(t, d), torch.rand(t, d)
    slot_mapping = torch.tensor(slots)
    return (x, cos, sin, weights, biases, pool(), pool(), slot_mapping,
            (slot_mapping // 4)[:, None], torch.ones(t, dtype=torch.long), 4,
            cfg.num_attention_heads, cfg.num_key_value_heads, cfg.rms_norm_eps, [])


_SMALL = ModelConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=16, intermediate_size=128,
                     max_position_embeddings=128)


@needs_kernel
def test_fused_layer_writes_keys_rounded_like_pytorch():
    """The new keys and values go into a bf16 pool exactly as `Tensor.to(bfloat16)` rounds the
    fp32 ones, at their slots and nowhere else."""
    assert kernels.load()
    torch.manual_seed(0)
    fp32 = _layer_inputs(_SMALL, torch.float32, [5, 13, 40])
    bf16 = list(fp32)
    bf16[5], bf16[6] = fp32[5].bfloat16(), fp32[6].bfloat16()
    out32 = torch.ops.fullchain.decode_layer(*fp32)
    out16 = torch.ops.fullchain.decode_layer(*bf16)
    for full, half in ((fp32[5], bf16[5]), (fp32[6], bf16[6])):
        assert torch.equal(half, full.bfloat16())
        written = full[:, [1, 3, 10], [1, 1, 0]]  # slots 5, 13 and 40 of blocks of 4
        rest = full.clone()
        rest[:, [1, 3, 10], [1, 1, 0]] = 0
        assert written.abs().sum(-1).min() > 0 and not rest.any()
    # with one key each, attention returns that key's value: the rounded values show through
    assert not torch.equal(out16, out32) and torch.allclose(out16, out32, atol=0.05)


@needs_kernel
def test_fused_layers_reject_slots_and_counts_that_do_not_fit():
    assert kernels.load()
    args = list(_layer_inputs(_SMALL, torch.float32, [5, 64]))
    with pytest.raises(RuntimeError, match="slot 64 is outside the pool of 64"):
        torch.ops.fullchain.decode_layer(*args)
    args = list(_layer_inputs(_SMALL, torch.float32, [5, 6]))
    caches = [args[5], args[6]]
    with pytest.raises(RuntimeError, match="9 weights, 7 biases .* got 9, 7, 0 and 2"):
        torch.ops.fullchain.decode_layers(args[0], args[1], args[2], args[3], args[4], caches,
                                          caches, *args[7:])


def _stack_inputs(weight_dtype: torch.dtype, pool_dtype: torch.dtype, rows: int, bias: bool):
    """`decode_layers`' arguments for one token of `rows` sequences of 13.. keys (blocks of 4,
    scattered over the pool), a random two-layer model's weights (int8: quantised), random
    pools."""
    cfg = ModelConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, intermediate_size=128,
                      max_position_embeddings=128, qkv_bias=bias)
    model = Transformer(cfg)
    model.init_weights(seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1, generator=g)
    if weight_dtype == torch.int8:
        kernels.quantize(model, "int8")
    else:
        kernels.use_decode_kernel(model.to(weight_dtype))
    fused = kernels.FusedDecoder(model)
    pool = (quantize_kv if pool_dtype == torch.int8 else
            lambda x: x.to(pool_dtype))
    pools = [[pool(torch.randn(2, 32, 4, 16, generator=g)) for _ in range(2)] for _ in range(2)]
    lens = torch.arange(rows) + 13
    tables = torch.stack([31 - 5 * r - torch.arange(5) for r in range(rows)])
    slots = tables[torch.arange(rows), (lens - 1) // 4] * 4 + (lens - 1) % 4
    x, cos, sin = (torch.randn(rows, 64, generator=g), torch.rand(rows, 16, generator=g),
                   torch.rand(rows, 16, generator=g))
    return [x, cos, sin, fused.weights, fused.biases, *pools, slots, tables, lens, 4, 4, 2,
            1e-5, fused.scales]


@needs_kernel
@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("pool_dtype", [torch.float32, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("rows", [1, 3, 4])
def test_few_sequences_in_one_region_equal_layer_by_layer(weight_dtype, pool_dtype, rows):
    """Up to four sequences run all layers in one parallel region; the result and every pool
    are bit for bit those of the layer-by-layer path (with biases); with the model's final
    norm, the result is that norm of it."""
    assert kernels.load()
    args = _stack_inputs(weight_dtype, pool_dtype, rows, bias=True)
    x, cos, sin, weights, biases, k_pools, v_pools, *rest, scales = _stack_inputs(
        weight_dtype, pool_dtype, rows, bias=True)
    norm = torch.rand(64, generator=torch.Generator().manual_seed(2)) + 0.5
    norm = norm.to(weight_dtype if weight_dtype.is_floating_point else torch.float32)
    with torch.no_grad():
        region = torch.ops.fullchain.decode_layers(*args)
        normed = torch.ops.fullchain.decode_layers(*_stack_inputs(weight_dtype, pool_dtype,
                                                                  rows, bias=True), norm)
        for layer in range(2):
            x = torch.ops.fullchain.decode_layer(
                x, cos, sin, weights[9 * layer:9 * layer + 9], biases[7 * layer:7 * layer + 7],
                k_pools[layer], v_pools[layer], *rest, scales[7 * layer:7 * layer + 7])
    assert torch.equal(region, x)
    for a, b in zip(args[5] + args[6], k_pools + v_pools):
        assert torch.equal(a, b)
    expected = norm.float() * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
    torch.testing.assert_close(normed, expected, rtol=1e-6, atol=1e-6)


@needs_kernel
def test_few_sequences_are_checked_before_the_threads_start():
    """Bad slots, block tables or weights raise one clear error (an error inside the parallel
    region would end the process) and leave the pools untouched."""
    assert kernels.load()
    args = _stack_inputs(torch.float32, torch.float32, 2, bias=False)
    before = [p.clone() for p in args[5]]
    bad = list(args)
    bad[7] = torch.tensor([5, 128])
    with pytest.raises(RuntimeError, match="slot 128 is outside the pool of 128"):
        torch.ops.fullchain.decode_layers(*bad)
    bad = list(args)
    bad[8] = args[8].clone()
    bad[8][1, 0] = 99
    with pytest.raises(RuntimeError, match="names block 99 of a pool of 32"):
        torch.ops.fullchain.decode_layers(*bad)
    bad = list(args)
    bad[3] = list(args[3])
    bad[3][9 + 6] = args[3][9 + 6][:100]
    with pytest.raises(RuntimeError, match=r"layer 1 weight 6 is \[100, 64\]"):
        torch.ops.fullchain.decode_layers(*bad)
    with pytest.raises(RuntimeError, match=r"the final norm weight must be .* \[64\], not \[63\]"):
        torch.ops.fullchain.decode_layers(*args, torch.ones(63))
    assert all(torch.equal(a, b) for a, b in zip(before, args[5]))


@needs_kernel
def test_int8_scales_are_checked():
    """int8 projections without their scales, or with a scale of the wrong length, are refused
    before anything runs (the sums would silently lack their scale)."""
    assert kernels.load()
    args = _stack_inputs(torch.int8, torch.float32, 2, bias=False)
    with pytest.raises(RuntimeError, match="int8 projections take 7 scales a layer"):
        torch.ops.fullchain.decode_layers(*args[:-1], [])
    scales = list(args[-1])
    scales[7 + 4] = scales[7 + 4][:-1]  # layer 1's gate
    with pytest.raises(RuntimeError, match=r"layer 1 weight 6's scale must be .*\[128\]"):
        torch.ops.fullchain.decode_layers(*args[:-1], scales)
    with pytest.raises(RuntimeError, match="int8 weights take one scale each"):
        torch.ops.fullchain.gemv(args[3][1], args[0])


@needs_kernel
@pytest.mark.parametrize("rope_scaling", [None, {"rope_type": "dynamic", "factor": 2.0}])
def test_fused_rope_table_gives_the_modules_values(rope_scaling):
    """The fused decoder's cos/sin come from a table grown as positions come: the values the
    model's rotary embedding computes for those positions (bf16-cast like the modules), and
    with dynamic NTK the computed ones once a batch goes past max_position_embeddings."""
    cfg = ModelConfig(vocab_size=96, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, intermediate_size=128,
                      max_position_embeddings=512, rope_scaling=rope_scaling)
    model = Transformer(cfg).to(torch.bfloat16)
    kernels.use_decode_kernel(model)
    fused = kernels.FusedDecoder.of(model)
    for positions in ([3], [0, 255], [256, 7], [511, 2], [600, 5]):
        pos = torch.tensor([positions])
        cos, sin = fused.rope(pos, torch.bfloat16)
        ref_cos, ref_sin = model.model.rotary_emb(pos, torch.bfloat16)
        assert torch.equal(cos, ref_cos[0].float()) and torch.equal(sin, ref_sin[0].float())
    assert len(fused.cos) == (512 if rope_scaling else 1024)  # 256, doubled, doubled


def test_describe_names_the_weights_pool_and_path():
    """What `fullchain serve` logs at start: the weights' memory and kind, the pool, the path."""
    from fullchain.model import preset

    def engine(**kwargs) -> Engine:
        model = Transformer(preset("tiny"))
        model.init_weights(seed=0)
        return Engine(model, None, EngineConfig(num_blocks=10, block_size=4, **kwargs))

    full, int8 = engine().describe(), engine(quantization="int8").describe()
    assert "(float32); KV pool 10 blocks of 4 tokens" in full and "(int8)" in int8
    mb = [float(text.split("weights ")[1].split(" MB")[0]) for text in (full, int8)]
    assert 0.2 < mb[1] / mb[0] < 0.35  # a quarter, and the norms and scales
    assert ("CPU kernels" in full) == (HAS_COMPILER and kernels.load())
