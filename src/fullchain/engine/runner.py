"""The model runner: owns the weights and the paged KV tensors, runs one ragged batch per step.

All scheduled tokens of a step are flattened into one row (B=1, T=total) with per-token
positions. `PagedAttention` writes each new token's k/v into its slot of the pool and attends
over the sequence's slots, read through its block table; the metadata is built once per step and
passed explicitly to the attention backend (no global context). On the CPU, steps that only
decode go through `kernels.FusedDecoder` instead (one C++ call for all the layers, the same
metadata).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from fullchain.engine.kernels import (
    FusedDecoder,
    paged_decode_attention,
    use_decode_kernel,
)
from fullchain.engine.kv_quant import from_pool, pool_dim, row_bytes, to_pool
from fullchain.engine.scheduler import ScheduledChunk
from fullchain.model.attention import causal
from fullchain.model.memory import huge_page_buffer, move_to_huge_pages


@dataclass
class PrefillPart:
    rows: slice  # this chunk's rows in the flattened batch
    blocks: torch.Tensor  # [nb] the sequence's blocks holding keys 0 .. L-1
    mask: torch.Tensor | None  # [group * t, L] additive (0 or -inf, the model's dtype): query
    # row (g, i) at position start + i sees keys <= start + i; built once for all layers. None
    # for a chunk at position 0, which attends causally over its own keys


@dataclass
class BatchMetadata:
    """Where each new token's k/v goes and what each query attends to, for one step."""

    slot_mapping: torch.Tensor  # [T]
    block_size: int
    decode_rows: torch.Tensor  # [Bd] rows of single-token (decode) chunks
    decode_blocks: torch.Tensor  # [Bd, nb] block tables, padded with block 0
    decode_lens: torch.Tensor  # [Bd] keys of each decode sequence, the new one included
    decode_mask: torch.Tensor | None  # [Bd, 1, 1, nb * block_size] real keys (not with
    # the kernel)
    prefills: list[PrefillPart]
    kernel: bool = False  # decode rows through `kernels.paged_decode_attention`

    @cached_property
    def slot_places(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each new token's block and position in it, once a step for all layers (and not at
        all where the fused kernels write the pool)."""
        return self.slot_mapping // self.block_size, self.slot_mapping % self.block_size


class PagedAttention:
    """The attention backend over a paged pool: k_cache[layer] is [KV, num_blocks, block_size,
    D] (a kv head's keys of a block together, and of consecutive blocks one after the other, as
    the decode kernel reads them; D + 4 bytes a key in an int8 pool, `kv_quant`); slot s is
    position s % block_size of block s // block_size. Read by whole blocks (one copy of
    block_size * D values per kv head and block instead of one per key)."""

    def __init__(self, k_cache: list[torch.Tensor], v_cache: list[torch.Tensor],
                 meta: BatchMetadata) -> None:
        self.k_cache, self.v_cache, self.meta = k_cache, v_cache, meta

    def __call__(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor) -> torch.Tensor:
        meta, heads = self.meta, q.shape[1]
        kc, vc = self.k_cache[layer_idx], self.v_cache[layer_idx]
        kv_heads, dim = kc.shape[0], q.shape[3]
        group = heads // kv_heads
        block, pos = meta.slot_places
        kc[:, block, pos] = to_pool(k[0], kc.dtype)  # [KV, T, D]
        vc[:, block, pos] = to_pool(v[0], vc.dtype)
        out = torch.empty_like(q)
        if meta.decode_rows.numel():
            self._decode(q, kc, vc, out)
        for part in meta.prefills:
            if part.mask is None:  # no earlier keys: causal over the chunk's own, no mask to
                # build or apply (a 1,056-token prompt: attention 0.93 -> 0.48 s, of the time to
                # its first token 2.5 -> 2.0 s)
                rows = part.rows
                out[:, :, rows] = causal(layer_idx, q[:, :, rows], k[:, :, rows], v[:, :, rows])
                continue
            # the query heads that share a kv head are rows of it
            t = part.rows.stop - part.rows.start
            qp = q[0, :, part.rows].reshape(kv_heads, group * t, dim)  # rows: (head, token)
            length = part.mask.shape[1]
            keys = from_pool(_gather(kc, part.blocks)[:, :length], q.dtype)  # [KV, L, D]
            vals = from_pool(_gather(vc, part.blocks)[:, :length], q.dtype)
            # 4-D: PyTorch's CPU flash kernel takes only batched inputs (3-D ones fall back to
            # the math path, 3.4x slower on a 256-token chunk)
            o = F.scaled_dot_product_attention(qp[None], keys[None], vals[None],
                                               attn_mask=part.mask)
            out[0, :, part.rows] = o.reshape(heads, t, dim)
        return out

    def _decode(self, q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor,
                out: torch.Tensor) -> None:
        """The single-token rows of the step, into `out`: keys read in place by the kernel, or
        gathered by whole blocks for PyTorch's attention."""
        meta, heads = self.meta, q.shape[1]
        kv_heads, dim = kc.shape[0], q.shape[3]
        if meta.kernel:
            qd = q[0, :, meta.decode_rows].transpose(0, 1).contiguous()  # [Bd, H, D]
            o = paged_decode_attention(qd, kc, vc, meta.decode_blocks, meta.decode_lens,
                                       meta.block_size)
            out[0, :, meta.decode_rows] = o.transpose(0, 1)
            return
        # grouped-query attention without repeating k/v: the query heads that share a kv head
        # become query rows of that head (same keys, same mask)
        bd, group = meta.decode_rows.numel(), heads // kv_heads
        qd = q[0, :, meta.decode_rows].transpose(0, 1).reshape(bd, kv_heads, group, dim)
        keys = from_pool(_gather(kc, meta.decode_blocks), q.dtype)  # [Bd, KV, nb * bs, D]
        vals = from_pool(_gather(vc, meta.decode_blocks), q.dtype)  # (a pool of another dtype)
        o = F.scaled_dot_product_attention(qd, keys, vals, attn_mask=meta.decode_mask)
        out[0, :, meta.decode_rows] = o.reshape(bd, heads, dim).transpose(0, 1)


def _gather(cache: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """The keys (or values) of the blocks `blocks` ([nb], or [B, nb] for B sequences) of a pool
    [KV, num_blocks, bs, D] as [KV, nb * bs, D] (or [B, KV, nb * bs, D]), in block order: whole
    blocks read with index_select (a row copy; advanced indexing is ~6x slower on the CPU)."""
    kv_heads, _, block_size, dim = cache.shape
    rows = cache.index_select(1, blocks.flatten())  # [KV, B * nb, bs, D]
    rows = rows.view(kv_heads, *blocks.shape[:-1], blocks.shape[-1] * block_size, dim)
    return rows.movedim(0, -3)


def column_major_weights(model: torch.nn.Module) -> None:
    """Store every linear weight [out, in] column-major (the same values, transposed strides):
    ``F.linear`` then multiplies by a contiguous [in, out] matrix, which the CPU's matrix-vector
    kernels read at the memory bandwidth (a 135M model's batch-1 products: 38 ms instead of 46
    on one thread here)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.weight.is_contiguous():
                if type(module) is not torch.nn.Linear:  # DecodeLinear and oneDNN's Linear
                    module.__class__ = torch.nn.Linear  # need row-major weights
                module.weight.data = module.weight.data.t().contiguous().t()


class ModelRunner:
    """Runs the model over the scheduled chunks and returns the logits the step needs."""

    def __init__(self, model: torch.nn.Module, *, num_blocks: int, block_size: int,
                 kv_dtype: torch.dtype | None = None, compile_decode: bool = False,
                 decode_kernel: bool = True, huge_pages: bool = False) -> None:
        cfg = model.config
        param = next(model.parameters())
        self.model, self.device, self.dtype = model, param.device, param.dtype
        cpu = self.device.type == "cpu"
        self.kernels = cpu and decode_kernel and use_decode_kernel(model)
        if cpu and not self.kernels:
            column_major_weights(model)
        huge_pages = cpu and huge_pages
        if huge_pages:  # the weights as laid out for decoding, before anything refers to them
            move_to_huge_pages([*model.parameters(), *model.buffers()])
        kv_dtype = kv_dtype or self.dtype
        # the attention kernel reads fp32, bf16 or int8 pools; with it, decode-only steps go
        # through one C++ call for all the layers where the model allows it
        self.attention_kernel = self.kernels and kv_dtype in (torch.float32, torch.bfloat16,
                                                              torch.int8)
        self.fused = FusedDecoder.of(model) if self.attention_kernel else None
        # otherwise decode-only steps have one shape family (B tokens, growing KV): compiled
        # once, with dynamic sizes; prefill steps (ragged chunks) stay eager
        self.decode_model = torch.compile(model, dynamic=True) if compile_decode else model
        self.block_size = block_size
        dim = pool_dim(cfg.head_dim, kv_dtype)
        shape = (cfg.num_key_value_heads, num_blocks, block_size, dim)
        pools = 2 * cfg.num_hidden_layers
        if huge_pages:  # one buffer, its pages taken as the blocks are first written
            size = math.prod(shape)
            pool = huge_page_buffer(pools * size * kv_dtype.itemsize).view(kv_dtype)
            caches = [pool[i * size:(i + 1) * size].view(shape) for i in range(pools)]
        else:
            caches = [torch.zeros(shape, dtype=kv_dtype, device=self.device)
                      for _ in range(pools)]
        self.k_cache, self.v_cache = caches[0::2], caches[1::2]

    def _prefill_mask(self, t: int, start: int) -> torch.Tensor:
        """The additive mask of a chunk of t tokens at position `start` ([group * t, start + t],
        rows (query head of a kv head, token)): a boolean one was turned into this by every
        layer's attention (`where`, and `repeat` for the query heads), ~5 ms a layer at 1k."""
        cfg = self.model.config
        group = cfg.num_attention_heads // cfg.num_key_value_heads
        seen = torch.ones(t, start + t, dtype=torch.bool, device=self.device).tril(start)
        mask = torch.zeros(seen.shape, dtype=self.dtype, device=self.device)
        return mask.masked_fill_(~seen, float("-inf")).repeat(group, 1)

    @staticmethod
    def kv_bytes_per_block(cfg, block_size: int, dtype: torch.dtype) -> int:
        row = row_bytes(cfg.head_dim, dtype)  # one key of one kv head
        return 2 * cfg.num_hidden_layers * block_size * cfg.num_key_value_heads * row

    def build(self, chunks: list[ScheduledChunk]) -> tuple[torch.Tensor, torch.Tensor,
                                                           BatchMetadata]:
        """input_ids [1, T], positions [1, T] and the attention metadata of one step. Built as
        Python lists, one tensor each at the end: a batch-1 decode step is ~25 ms, and a tensor
        op per chunk and field cost ~0.4 ms of it."""
        ids, positions, slots = [], [], []
        decode_rows, decode_tables, decode_lens, prefills = [], [], [], []
        row, bs, dev = 0, self.block_size, self.device
        for c in chunks:
            end, table = c.start + c.num_tokens, c.seq.block_table
            ids += c.seq.token_ids[c.start:end]
            positions += range(c.start, end)
            slots += [table[p // bs] * bs + p % bs for p in range(c.start, end)]
            blocks = table[: -(-end // bs)]
            if c.num_tokens == 1:
                decode_rows.append(row)
                decode_tables.append(blocks)
                decode_lens.append(end)
            else:
                mask = None if c.start == 0 else self._prefill_mask(c.num_tokens, c.start)
                prefills.append(PrefillPart(slice(row, row + c.num_tokens),
                                            torch.tensor(blocks, device=dev), mask))
            row += c.num_tokens
        widest = max((len(t) for t in decode_tables), default=0)
        tables = torch.tensor([t + [0] * (widest - len(t)) for t in decode_tables],
                              dtype=torch.long).view(len(decode_tables), widest)
        lens = torch.tensor(decode_lens, dtype=torch.long)
        mask = None  # the kernel reads the lengths instead
        if not self.attention_kernel:
            keys = torch.arange(widest * bs)
            mask = (keys[None, :] < lens[:, None])[:, None, None, :].to(dev)
        meta = BatchMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=dev), block_size=bs,
            decode_rows=torch.tensor(decode_rows, dtype=torch.long, device=dev),
            decode_blocks=tables.to(dev), decode_lens=lens.to(dev), decode_mask=mask,
            prefills=prefills, kernel=self.attention_kernel)
        input_ids = torch.tensor([ids], dtype=torch.long, device=dev)
        return input_ids, torch.tensor([positions], dtype=torch.long, device=dev), meta

    @torch.no_grad()
    def run(self, chunks: list[ScheduledChunk]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Logits [N, vocab] (fp32) at the last token of each sampling chunk, in chunk order, and
        for each chunk that wants prompt log-probs (by chunk index) the logits of all its rows."""
        input_ids, positions, meta = self.build(chunks)
        if self.fused is not None and not meta.prefills:
            hidden = self.fused(input_ids, positions, self.k_cache, self.v_cache,
                                meta.slot_mapping, meta.decode_blocks, meta.decode_lens,
                                self.block_size)  # [T, C]
        else:
            attention = PagedAttention(self.k_cache, self.v_cache, meta)
            model = self.decode_model if not meta.prefills else self.model
            hidden = model(input_ids, positions=positions, attention=attention,
                           return_hidden=True)[0]  # [T, C]
        ends, prompt_rows, row = [], {}, 0
        for i, c in enumerate(chunks):
            row += c.num_tokens
            if c.sample:
                ends.append(row - 1)
            if c.seq.wants_prompt_logprobs() and c.start < c.seq.prompt_len - 1:
                prompt_rows[i] = (row - c.num_tokens, row)
        lm_head = self.model.lm_head
        logits = lm_head(hidden[ends]).float() if ends else hidden.new_zeros(0, 0)
        prompt_logits = {i: lm_head(hidden[a:b]).float() for i, (a, b) in prompt_rows.items()}
        return logits, prompt_logits
