"""The int8 KV pool: rows of int8 values and their scale, written alike by PyTorch and the
kernels, read by the decode kernel as their dequantised values, and an engine on it that keeps
the fp32 pool's outputs close in a quarter of the memory."""

import shutil

import pytest
import torch
import torch.nn.functional as F

from fullchain.engine import Engine, EngineConfig, SamplingParams, kernels
from fullchain.engine.kv_quant import dequantize, pool_dim, quantize, row_bytes
from fullchain.engine.runner import ModelRunner
from fullchain.model import ModelConfig, Transformer

from .conftest import make_model

HAS_COMPILER = any(shutil.which(c) for c in ("c++", "g++", "clang++"))
needs_kernel = pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler for the kernels")


def test_rows_hold_the_values_within_half_a_step_and_their_scale():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 64) * torch.tensor([1e-3, 1.0, 50.0])[:, None, None]
    x[1, 2] = 0
    rows = quantize(x)
    assert rows.dtype == torch.int8 and rows.shape == (3, 5, 68) == (3, 5, pool_dim(64, torch.int8))
    scale = x.abs().amax(-1) / 127
    assert torch.equal(rows[..., 64:].contiguous().view(torch.float32)[..., 0], scale)
    assert rows[..., :64].abs().max() == 127  # each row's largest value takes the full range
    back = dequantize(rows, torch.float32)
    assert ((back - x).abs() <= scale[..., None] / 2 * (1 + 1e-6)).all()
    assert not back[1, 2].any()  # a row of zeros stays zeros (scale 0, no division by it)
    assert dequantize(rows, torch.bfloat16).dtype == torch.bfloat16
    assert row_bytes(64, torch.int8) == 68 and row_bytes(64, torch.float32) == 256


def _scattered(rows: torch.Tensor, tables: torch.Tensor, lens: list[int], pool: torch.Tensor):
    """Put sequence b's keys rows[b] [L, KV, row] into its blocks (tables[b]) of pool [KV,
    blocks, bs, row]."""
    bs = pool.shape[2]
    for b, n in enumerate(lens):
        for t in range(n):
            pool[:, tables[b, t // bs], t % bs] = rows[b, t]
    return pool


@needs_kernel
@pytest.mark.parametrize("heads,kv_heads,dim", [(4, 2, 16), (9, 3, 64), (2, 2, 12), (8, 2, 32),
                                                  (10, 2, 8)])  # 2, 3, 1, 4, 5 heads a kv head
def test_decode_attention_reads_an_int8_pool_as_its_values(heads, kv_heads, dim):
    """The kernel over an int8 pool equals the kernel over the same pool dequantised (fp32),
    and stays close to exact attention over the original keys and values."""
    assert kernels.load()
    torch.manual_seed(heads)
    lens, bs, blocks = [1, 5, 16, 17, 40], 8, 32
    k, v = torch.randn(5, 40, kv_heads, dim), torch.randn(5, 40, kv_heads, dim)
    tables = torch.randperm(blocks)[:25].view(5, 5)
    pools = []
    for x in (k, v):
        garbage = quantize(torch.randn(kv_heads, blocks, bs, dim))
        pools.append(_scattered(quantize(x), tables, lens, garbage))
    q = torch.randn(5, heads, dim)
    out = kernels.paged_decode_attention(q, *pools, tables, torch.tensor(lens), bs)
    exact_pools = [dequantize(p, torch.float32) for p in pools]
    same = kernels.paged_decode_attention(q, *exact_pools, tables, torch.tensor(lens), bs)
    torch.testing.assert_close(out, same, rtol=1e-5, atol=1e-5)
    for b, n in enumerate(lens):
        keys = k[b, :n].transpose(0, 1).repeat_interleave(heads // kv_heads, 0)  # [H, L, D]
        vals = v[b, :n].transpose(0, 1).repeat_interleave(heads // kv_heads, 0)
        ref = F.scaled_dot_product_attention(q[b][:, None], keys, vals)[:, 0]
        assert (out[b] - ref).abs().max() < 0.03 * ref.abs().max()


@needs_kernel
def test_the_fused_layer_writes_rows_as_pytorch_quantises_them():
    """`decode_layer` writes a new token's keys and values into an int8 pool bit for bit as
    `kv_quant.quantize` turns the fp32 ones it writes into an fp32 pool, at their slots only."""
    assert kernels.load()
    cfg = ModelConfig(vocab_size=96, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, intermediate_size=128,
                      max_position_embeddings=128)
    model = Transformer(cfg)
    model.init_weights(seed=0)
    kernels.use_decode_kernel(model)
    weights = kernels.FusedDecoder(model).weights[:9]
    torch.manual_seed(1)
    x, cos, sin = torch.randn(3, 64), torch.rand(3, 16), torch.rand(3, 16)
    slots = torch.tensor([5, 13, 40])  # blocks of 4: blocks 1, 3 and 10
    step = (slots, (slots // 4)[:, None], torch.ones(3, dtype=torch.long), 4, 4, 2, 1e-5, [])

    def run(dtype):
        pools = [torch.zeros(2, 16, 4, pool_dim(16, dtype), dtype=dtype) for _ in range(2)]
        out = torch.ops.fullchain.decode_layer(x, cos, sin, weights, [None] * 7, *pools, *step)
        return out, pools

    out32, fp32 = run(torch.float32)
    out8, int8 = run(torch.int8)
    written = (slice(None), [1, 3, 10], [1, 1, 0])  # slots 5, 13 and 40
    for full, small in zip(fp32, int8):
        assert torch.equal(small[written], quantize(full[written]))
        small[written] = 0
        assert not small.any()
    # with one key each, attention returns that key's value: the rounded values show through
    assert not torch.equal(out8, out32) and torch.allclose(out8, out32, atol=0.05)


@pytest.mark.parametrize("decode_kernel", [True, False])
def test_an_engine_on_an_int8_pool_keeps_the_greedy_outputs(decode_kernel):
    """Mixed prompts and decodes (prefix caching on): an int8 pool, through the kernels (the
    fused layers included) and through PyTorch's operators, gives nearly the fp32 pool's greedy
    tokens, and every block is back in the pool at the end."""
    if decode_kernel and not HAS_COMPILER:
        pytest.skip("no C++ compiler for the kernels")
    model = make_model(128)
    prompts = [[(7 * i + 3 * j) % 120 + 1 for j in range(5 + 9 * i)] for i in range(6)]
    prompts += [prompts[3][:20] + [5, 6]]  # a shared prefix: blocks from the cache
    params = SamplingParams(max_tokens=16, ignore_eos=True)
    outputs = {}
    for dtype in ("float32", "int8"):
        engine = Engine(model, None, EngineConfig(num_blocks=64, block_size=4,
                                                  max_num_batched_tokens=32, kv_cache_dtype=dtype,
                                                  decode_kernel=decode_kernel))
        assert engine.runner.k_cache[0].dtype == getattr(torch, dtype)
        assert (engine.runner.fused is not None) == (decode_kernel and kernels.load())
        outputs[dtype] = [o.outputs[0].token_ids for o in engine.generate(prompts, params)]
        assert engine.kv.num_used == 0
    same = sum(a == b for x, y in zip(outputs["float32"], outputs["int8"]) for a, b in zip(x, y))
    assert same >= 0.9 * 16 * len(prompts)


def test_an_int8_pool_holds_about_four_times_the_blocks():
    """In the same memory, an int8 pool holds (4 * D) / (D + 4) times the fp32 pool's blocks,
    and the engine says so."""
    cfg = make_model(128).config
    fp32, int8 = (ModelRunner.kv_bytes_per_block(cfg, 16, dtype)
                  for dtype in (torch.float32, torch.int8))
    d = cfg.head_dim
    assert fp32 / int8 == 4 * d / (d + 4)

    def blocks(dtype: str) -> int:
        config = EngineConfig(kv_cache_gb=0.001, kv_cache_dtype=dtype, max_num_seqs=1000)
        return Engine(make_model(128), None, config).kv.num_blocks

    assert blocks("int8") == int(0.001 * 2**30) // int8
    assert blocks("int8") > 3 * blocks("float32")
    text = Engine(make_model(128), None, EngineConfig(num_blocks=10, kv_cache_dtype="int8")
                  ).describe()
    assert f"KV pool 10 blocks of 16 tokens ({10 * int8 / 1e6:,.1f} MB, int8)" in text
