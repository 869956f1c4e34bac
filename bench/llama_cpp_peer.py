"""llama.cpp as a peer in bench_engine: the same weights written as GGUF
(`fullchain.checkpoint.gguf.write_gguf`), decoded through llama.cpp's C API (llama-cpp-python's
bindings, the library built for this CPU on install) in the same process, so that its figures
and the engine's come from the same minutes of this machine.

The three runs mirror the engine's: batch-1 decode (llama-bench's tg), decode steps of N
sequences whose prompts are in the KV cache (llama-batched-bench's TG), and R requests served
whole, prompts and outputs (its PP + TG together). Greedy tokens are fed back, as in a real
decode.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
from common import timed


class LlamaCpp:
    """One llama.cpp model and context with room for `sequences` sequences of `context` tokens
    each (a KV stream per sequence, llama.cpp's default), on `threads` threads, `batch` tokens
    a call and a micro-batch (the engine's token budget in bench_engine). `kv` "f16" (its
    default) or "q8_0" (int8 blocks of 32 with an fp16 scale; needs its flash attention)."""

    def __init__(self, path: str | os.PathLike, *, threads: int, sequences: int, context: int,
                 batch: int = 2048, kv: str = "f16") -> None:
        import llama_cpp
        self.api = api = llama_cpp
        api.llama_backend_init()
        if not _CALLBACKS:
            _CALLBACKS.append(api.llama_log_callback(_quiet))
            api.llama_log_set(_CALLBACKS[0], ctypes.c_void_p(0))
        self.model = api.llama_model_load_from_file(str(path).encode(),
                                                    api.llama_model_default_params())
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        params = api.llama_context_default_params()
        params.n_ctx = sequences * context
        params.n_batch = params.n_ubatch = batch
        params.n_seq_max = sequences
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False
        if kv == "q8_0":
            params.type_k = params.type_v = api.GGML_TYPE_Q8_0
            params.flash_attn_type = api.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.no_perf = True
        self.ctx = api.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not make a context for {path}")
        self.vocab = api.llama_vocab_n_tokens(api.llama_model_get_vocab(self.model))
        self.batch_size = batch
        self.batch = api.llama_batch_init(batch, 0, sequences)

    def close(self) -> None:
        self.api.llama_batch_free(self.batch)
        self.api.llama_free(self.ctx)
        self.api.llama_model_free(self.model)

    def clear(self) -> None:
        self.api.llama_memory_clear(self.api.llama_get_memory(self.ctx), True)

    def decode(self, items: list[tuple[int, int, int, bool]]) -> list[int]:
        """One llama_decode of (token, position, sequence, wants logits) items; the greedy token
        of each item that wants logits, in order."""
        b = self.batch
        for i, (token, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(items)
        if self.api.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed (KV cache full?)")
        return [self._argmax(i) for i, item in enumerate(items) if item[3]]

    def _argmax(self, i: int) -> int:
        row = self.api.llama_get_logits_ith(self.ctx, i)
        return int(np.ctypeslib.as_array(row, shape=(self.vocab,)).argmax())

    def prefill(self, prompts: list[list[int]]) -> list[int]:
        """All prompts into the cache (sequence i for prompt i), `batch` tokens a call as
        llama.cpp's server packs them; the greedy first token of each."""
        items = [(t, pos, seq, pos == len(p) - 1)
                 for seq, p in enumerate(prompts) for pos, t in enumerate(p)]
        firsts: list[int] = []
        for start in range(0, len(items), self.batch_size):
            firsts += self.decode(items[start:start + self.batch_size])
        return firsts

    def steps(self, tokens: list[int], start: list[int], n: int) -> list[int]:
        """`n` decode steps of every sequence at once, from its token and position."""
        for step in range(n):
            tokens = self.decode([(t, start[s] + step, s, True) for s, t in enumerate(tokens)])
        return tokens


def _quiet(level, text, user_data) -> None:
    """llama.cpp's log callback: silent (it prints every tensor it loads)."""


_CALLBACKS: list = []  # ctypes callbacks must outlive their registration


def batch1_decode(peer: LlamaCpp, prompt: list[int], n: int) -> float:
    """tokens/s of n single-token steps after the prompt."""
    peer.clear()
    first = peer.prefill([prompt])
    return n / timed(lambda: peer.steps(first, [len(prompt)], n))


def decode_steps(peer: LlamaCpp, prompts: list[list[int]], n: int) -> float:
    """tokens/s summed over the sequences of n decode steps, prompts already cached."""
    peer.clear()
    firsts = peer.prefill(prompts)
    return len(prompts) * n / timed(lambda: peer.steps(firsts, [len(p) for p in prompts], n))


def serve(peer: LlamaCpp, prompts: list[list[int]], out: int) -> float:
    """tokens/s of R requests served whole: the prompts, then out - 1 steps of all of them."""
    peer.clear()

    def run():
        firsts = peer.prefill(prompts)
        peer.steps(firsts, [len(p) for p in prompts], out - 1)
    return len(prompts) * out / timed(run)


def gguf_file(model, folder: Path, file_type: str) -> Path:
    """The model as a GGUF file of `file_type` in `folder` (a vocabulary of ids only)."""
    from fullchain.checkpoint.gguf import write_gguf
    return write_gguf(model, folder / f"model-{file_type}.gguf", file_type=file_type,
                      name="bench")
