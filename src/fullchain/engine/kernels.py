"""The engine's CPU decode kernels, compiled on first use for this CPU.

- ``torch.ops.fullchain.gemv(weight, x, scale=None)`` (`gemv.cpp`): linear products of a few
  rows, reading the weights (fp32, bf16, or int8 with a scale per output row) at the memory
  bandwidth;
- ``torch.ops.fullchain.paged_decode_attention`` (`paged_attention.cpp`): one query token per
  sequence over its keys in the paged KV pool, read in place through its block table;
- ``torch.ops.fullchain.decode_layer`` (`decode_layer.cpp`): a whole decoder layer of a decode
  step in one call; ``decode_layers`` runs all of a model's (`FusedDecoder`).

They are built together by `torch.utils.cpp_extension` (cached under
``~/.cache/torch_extensions``); the fake (shape) functions of the first two let them run inside
``torch.compile``d decode too. `use_decode_kernel(model)` swaps the model's linear layers for
`DecodeLinear`: the same parameters, inputs of a few rows through the kernel, everything else
through ``F.linear``. `quantize(model, "int8")` replaces them by `Int8Linear`s and the
embedding by an `Int8Embedding` (weight-only int8: a quarter of fp32's memory and of the bytes
read per token). Where no C++ compiler is found the engine keeps PyTorch's operators and says
so once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from fullchain.engine.params import QUANTIZATIONS
from fullchain.model.linear import Linear, linear

log = logging.getLogger(__name__)
_SOURCES = [Path(__file__).with_name(name)
            for name in ("kernels.h", "gemv.cpp", "paged_attention.cpp", "decode_layer.cpp")]
_FLAGS = ["-O3", "-march=native", "-fopenmp"]
_state: dict[str, bool] = {}
MAX_ROWS = 4  # bf16 products beyond this go to PyTorch on CPUs with native bf16 products
# products of up to this many rows go through the kernels (kMaxKernelRows in kernels.h): a few
# row by row (tile_limit there), beyond in register tiles (32 rows, a 135M model's layer
# products and LM head: 1.33x PyTorch's W x^T, 1.79x x W^T, bench/bench_kernels.py, 2
# threads); prompt chunks through PyTorch's GEMM
MAX_KERNEL_ROWS = 64


def load() -> bool:
    """Compile (once per source, flags and CPU) and load the kernels; False if they cannot be."""
    if "ok" not in _state:
        from torch.utils import cpp_extension
        _ninja_on_path()
        name = extension_name()
        try:
            with _build_lock(build_directory(name)) as folder:
                cpp_extension.load(name, [str(p) for p in _SOURCES if p.suffix == ".cpp"],
                                   extra_cflags=_FLAGS, extra_ldflags=["-fopenmp"],
                                   build_directory=str(folder), is_python_module=False)
            torch.library.register_fake("fullchain::gemv", _gemv_shape)
            torch.library.register_fake("fullchain::paged_decode_attention", _attention_shape)
            _state["ok"] = True
        except Exception as e:  # no compiler, no ninja, a foreign CPU: keep F.linear
            first_line = str(e).splitlines()[0] if str(e) else ""
            log.warning("the decode kernels could not be built (%s: %s); decode steps use "
                        "PyTorch's operators", type(e).__name__, first_line)
            _state["ok"] = False
    return _state["ok"]


def extension_name() -> str:
    """The kernels' name: a hash of their sources, the flags and the CPU."""
    key = "".join(p.read_text() for p in _SOURCES) + f"{_FLAGS}{platform.machine()}"
    key += torch.backends.cpu.get_cpu_capability()
    return f"fullchain_kernels_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def build_directory(name: str) -> Path:
    """Where the kernels `name` are built: under $TORCH_EXTENSIONS_DIR (default
    ~/.cache/torch_extensions), one folder per Python and PyTorch version."""
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR",
                               Path.home() / ".cache" / "torch_extensions"))
    tag = f"fullchain-py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}"
    return root / tag / name


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[Path]:
    """Hold an exclusive `flock` on the build folder while loading (the system releases it when
    the process ends, however it ends). torch's own lock file, found there while holding it,
    was left by a build that was stopped (Ctrl-C, a killed server): torch would wait for it
    forever, so it is removed. Where there is no `flock` (Windows), torch's lock alone."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield folder
        return
    with open(folder / "fullchain.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        stale = folder / "lock"
        if stale.exists():
            log.warning("removing %s, left by a build of the decode kernels that was stopped",
                        stale)
            stale.unlink()
        yield folder


def _gemv_shape(weight: torch.Tensor, x: torch.Tensor, scale=None) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _attention_shape(q: torch.Tensor, k_cache, v_cache, block_tables, seq_lens,
                     block_size: int, scale: float) -> torch.Tensor:
    return q.new_empty(q.shape)


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_tables: torch.Tensor, seq_lens: torch.Tensor,
                           block_size: int) -> torch.Tensor:
    """q [B, H, D] (one token per sequence) over keys 0 .. seq_lens[b]-1 of sequence b, found
    through its block table [B, nb] in the pool k_cache / v_cache [KV, blocks, block_size, D]
    (fp32, bf16, or int8 rows of D + 4 bytes, `kv_quant`): softmax attention with scale
    1/sqrt(D), grouped-query heads sharing their kv head; [B, H, D]."""
    return torch.ops.fullchain.paged_decode_attention.default(
        q, k_cache, v_cache, block_tables, seq_lens, block_size, q.shape[-1] ** -0.5)


def _ninja_on_path() -> None:
    """torch's extension builder runs `ninja` from PATH; the `ninja` wheel puts it beside the
    interpreter, which is not on PATH when a venv's python is run without activating it."""
    import shutil
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"


def native_bf16() -> bool:
    """Whether PyTorch's CPU products run bf16 natively (AVX512-BF16 or AMX); without it they
    emulate it at ~18 GFLOP/s on 2 cores here, 3-7x slower than converting to fp32."""
    if "bf16" not in _state:
        try:
            _state["bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            _state["bf16"] = False
    return _state["bf16"]


class DecodeLinear(nn.Linear):
    """`nn.Linear` whose inputs of up to `MAX_KERNEL_ROWS` rows (decode steps, short prompts) go
    through ``fullchain::gemv``, and longer ones (prompt chunks) through PyTorch's GEMM. bf16
    weights on a CPU without native bf16 products are converted to fp32 for the long ones (3-7x
    faster than PyTorch's emulated bf16 product); where the CPU has them, bf16 products of more
    than `MAX_ROWS` rows stay with PyTorch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        bf16 = self.weight.dtype == torch.bfloat16
        if rows <= MAX_ROWS or (rows <= MAX_KERNEL_ROWS and not (bf16 and native_bf16())):
            y = torch.ops.fullchain.gemv.default(self.weight, x)
            return y if self.bias is None else y + self.bias
        if bf16 and not native_bf16():
            bias = None if self.bias is None else self.bias.float()
            return linear(x.float(), self.weight.float(), bias).to(x.dtype)
        return linear(x, self.weight, self.bias)


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row: q = round(w / s) in [-127, 127] with s = max |w_row| / 127
    (1 for a row of zeros); returns (q int8 [out, in], s fp32 [out]). w = q * s within s / 2."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


class Int8Linear(nn.Module):
    """A linear layer with int8 weights and one fp32 scale per output row (weight-only: the
    input and output stay in the model's dtype). Inputs of up to `MAX_KERNEL_ROWS` rows on the
    CPU go through ``fullchain::gemv`` (the integers read from memory, the sum scaled once per
    row); longer ones (prompt chunks) and other devices dequantise the weight to fp32 for
    PyTorch's GEMM. `qweight` and `scale` are buffers: the layer is for inference only."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        qweight, scale = quantize_weight(linear.weight)
        self.register_buffer("qweight", qweight.to(linear.weight.device))
        self.register_buffer("scale", scale.to(linear.weight.device))
        self.bias = linear.bias

    def dequantized(self) -> torch.Tensor:
        """The weight the layer computes with, fp32 [out, in]."""
        return self.qweight.float() * self.scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if x.device.type == "cpu" and rows <= MAX_KERNEL_ROWS and _state.get("ok"):
            y = torch.ops.fullchain.gemv.default(self.qweight, x, self.scale)
        else:
            y = linear(x.float(), self.dequantized()).to(x.dtype)
        return y if self.bias is None else y + self.bias


class Int8Embedding(nn.Module):
    """An embedding table as int8 rows with one fp32 scale each: `Int8Linear`'s layout, so that
    a tied LM head and the lookup share one copy. A lookup dequantises the rows it reads, to the
    table's original dtype."""

    def __init__(self, embedding: nn.Embedding, tied: Int8Linear | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = embedding.weight.shape
        self.dtype = embedding.weight.dtype
        if tied is None:
            qweight, scale = (t.to(embedding.weight.device)
                              for t in quantize_weight(embedding.weight))
        else:
            qweight, scale = tied.qweight, tied.scale
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.qweight[ids].float() * self.scale[ids].unsqueeze(-1)
        return rows.to(self.dtype)


def quantize(model: nn.Module, method: str) -> int:
    """Replace every linear layer and embedding of `model` by its `method` form (``"int8"``:
    `Int8Linear`, `Int8Embedding`; a tied embedding and LM head keep sharing one int8 table),
    in place; returns how many modules were replaced. Loads the CPU kernels where they serve."""
    if method not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {method!r}; one of {', '.join(QUANTIZATIONS)}")
    if next(model.parameters()).device.type == "cpu":
        load()
    by_weight: dict[int, Int8Linear] = {}  # id of an original weight -> its int8 layer

    def linear(child: nn.Linear) -> Int8Linear:
        by_weight[id(child.weight)] = layer = Int8Linear(child)
        return layer

    # the linears first: a tied embedding shares the LM head's table
    return (_swap(model, nn.Linear, linear)
            + _swap(model, nn.Embedding, lambda e: Int8Embedding(e, by_weight.get(id(e.weight)))))


def _swap(model: nn.Module, kind: type, make) -> int:
    """Replace each submodule of type `kind` by make(it); returns how many."""
    found = [(parent, name, child) for parent in list(model.modules())
             for name, child in parent.named_children() if isinstance(child, kind)]
    for parent, name, child in found:
        setattr(parent, name, make(child))
    return len(found)


def weight_bytes(model: nn.Module) -> int:
    """The bytes a model's weights take: parameters and buffers (int8 ones with their scales),
    a tensor shared by two modules once."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def use_decode_kernel(model: nn.Module) -> bool:
    """Swap the CPU model's fp32/bf16 linear layers for `DecodeLinear` (weights made row-major
    again if an engine without the kernel had re-laid them); returns whether the kernel is in
    use."""
    param = next(model.parameters())
    if param.device.type != "cpu" or param.dtype not in (torch.float32, torch.bfloat16):
        return False
    if not load():
        return False
    with torch.no_grad():
        for module in model.modules():
            if type(module) in (nn.Linear, Linear, DecodeLinear):
                module.weight.data = module.weight.data.contiguous()
                module.__class__ = DecodeLinear  # same parameters and state dict
    return True


class FusedDecoder:
    """Decode steps of a `Transformer` whose linear layers are `DecodeLinear`s (or all
    `Int8Linear`s, their scales passed along): embeddings and
    RoPE tables in Python, then one ``fullchain::decode_layers`` call for all the layers and
    the final norm (same weights, fp32 arithmetic; up to four sequences in one parallel region,
    more a ``decode_layer`` each).
    `FusedDecoder.of(model)` is None for models it does not cover (adapters wrapped around the
    layers, forward hooks, a sliding window)."""

    def __init__(self, model: nn.Module) -> None:
        self.backbone, cfg = model.model, model.config
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.eps = cfg.rms_norm_eps
        # 9, 7 and 7 (int8 projections) or none per layer, in `decode_layer`'s order
        self.weights, self.biases, self.scales = [], [], []
        for layer in self.backbone.layers:
            linears = _linears(layer)
            q, k, v, o, gate, up, down = (_weight(m) for m in linears)
            self.weights += [layer.input_layernorm.weight, q, k, v, o,
                             layer.post_attention_layernorm.weight, gate, up, down]
            self.biases += [m.bias for m in linears]
            self.scales += [m.scale for m in linears if type(m) is Int8Linear]
        if all(b is None for b in self.biases):
            self.biases = []  # the op reads none: no list of Nones to pass each call
        # cos/sin of positions 0.. as the modules compute them (fp32, cast to the model's dtype
        # and back), grown as positions come: computed each step they took ~0.2 ms of a token,
        # the caches cold from streaming the weights. Dynamic NTK changes every position's
        # values once a batch goes past max_position_embeddings: those steps compute them.
        self.cos = self.sin = torch.empty(0, cfg.head_dim)
        self.table_limit = cfg.max_position_embeddings if cfg.rope_type == "dynamic" else None

    @classmethod
    def of(cls, model: nn.Module) -> FusedDecoder | None:
        from fullchain.model.transformer import DecoderLayer, RMSNorm, Transformer
        if type(model) is not Transformer or model.config.sliding_window is not None:
            return None
        if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
            return None  # something watches or changes a module's output
        kinds = set()  # of the projections: all DecodeLinear or all Int8Linear
        for layer in model.model.layers:
            norms = [layer.input_layernorm, layer.post_attention_layernorm]
            kinds |= {type(m) for m in _linears(layer)}
            if (type(layer) is not DecoderLayer or any(type(n) is not RMSNorm for n in norms)
                    or kinds not in ({DecodeLinear}, {Int8Linear})):
                return None
        return cls(model) if type(model.model.norm) is RMSNorm else None

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, k_cache: list,
                 v_cache: list, slot_mapping: torch.Tensor, block_tables: torch.Tensor,
                 seq_lens: torch.Tensor, block_size: int) -> torch.Tensor:
        """input_ids, positions [1, T] (one new token of each of T sequences) -> the final
        hidden states [T, C] in the model's dtype; the new keys and values go into the pool."""
        embed = self.backbone.embed_tokens(input_ids[0])
        cos, sin = self.rope(positions, embed.dtype)
        x = torch.ops.fullchain.decode_layers(
            embed.float().contiguous(), cos, sin, self.weights, self.biases, k_cache, v_cache,
            slot_mapping, block_tables, seq_lens, block_size, self.heads, self.kv_heads,
            self.eps, self.scales, self.backbone.norm.weight)
        return x.to(embed.dtype)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
        """cos, sin [T, head_dim] (fp32, contiguous) of positions [1, T]."""
        end = int(positions.max()) + 1
        if self.table_limit is not None and end > self.table_limit:
            cos, sin = self.backbone.rotary_emb(positions, dtype)  # cast like the modules do
            return cos[0].float().contiguous(), sin[0].float().contiguous()
        if end > len(self.cos):  # double the table (at least 256 positions)
            size = max(end, 2 * len(self.cos), 256)
            if self.table_limit is not None:  # and not past where dynamic NTK starts
                size = min(size, self.table_limit)
            cos, sin = self.backbone.rotary_emb(torch.arange(size, device=positions.device)[None],
                                                dtype)
            self.cos, self.sin = cos[0].float(), sin[0].float()
        return self.cos[positions[0]], self.sin[positions[0]]


def _weight(linear: nn.Module) -> torch.Tensor:
    """What `decode_layer` reads of a projection: its weight, or its int8 one."""
    return linear.qweight if type(linear) is Int8Linear else linear.weight


def _linears(layer: nn.Module) -> list[nn.Module]:
    """A decoder layer's q, k, v, o, gate, up and down projections, in `decode_layer`'s order."""
    attn, mlp = layer.self_attn, layer.mlp
    return [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj,
            mlp.down_proj]
