"""Per-request sampling parameters and the engine's config."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from fullchain.config import FullchainError

MAX_LOGPROBS = 20


@dataclass(kw_only=True)
class SamplingParams:
    """How one request is decoded. temperature 0 is greedy (top-k/top-p/min-p then do nothing).

    `max_tokens` 0 computes the prompt only (with `prompt_logprobs` that is scoring).
    `stop_token_ids` add to the tokenizer's end-of-turn ids unless `ignore_eos`; a stop id ends
    the output and is its last id (it is never part of the text). Stop strings cut the text
    before them (kept with `include_stop_str_in_output`). `logprobs` / `prompt_logprobs` are the
    number of top alternatives to return (0: only the chosen token's log-prob); log-probs are
    those of the model's raw distribution, before penalties and temperature.
    """

    max_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    n: int = 1
    stop: Sequence[str] = ()
    stop_token_ids: Sequence[int] = ()
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    prompt_logprobs_from: int = 1  # first prompt position whose log-prob is wanted (scoring)
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    skip_special_tokens: bool = True
    # (output ids so far, logits [vocab]) -> logits; e.g. the server's JSON-object mode
    logits_processor: Callable | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.max_tokens >= 0, "max_tokens must be >= 0"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0 (0 turns it off)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (1 <= self.n <= 128, "n must be in [1, 128]"),
            (self.min_tokens >= 0, "min_tokens must be >= 0"),
            (self.logprobs is None or 0 <= self.logprobs <= MAX_LOGPROBS,
             f"logprobs must be in [0, {MAX_LOGPROBS}]"),
            (self.prompt_logprobs is None or 0 <= self.prompt_logprobs <= MAX_LOGPROBS,
             f"prompt_logprobs must be in [0, {MAX_LOGPROBS}]"),
            (self.prompt_logprobs_from >= 1, "prompt_logprobs_from must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise FullchainError(f"{message} (sampling parameters)")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(s for s in self.stop if s)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


KV_CACHE_DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")
QUANTIZATIONS = ("int8",)  # weight-only, see kernels.Int8Linear


@dataclass(kw_only=True)
class EngineConfig:
    """Sizes of the engine. `num_blocks` None derives the pool from `kv_cache_gb`.

    `max_num_batched_tokens` is the token budget of one step (decodes first, then prompt chunks);
    `max_num_seqs` caps the running batch; `max_model_len` None takes the model's context.
    `decode_kernel` runs decode steps on the CPU through `fullchain.engine.kernels` (built for
    this CPU on first use; PyTorch's operators if no compiler is found): decode-only steps one
    C++ call for all the layers, the linear products of up to four rows and the attention of
    decode rows in mixed steps through its kernels.
    `kv_cache_dtype` stores keys and values as "auto" (the model's dtype), "float32",
    "bfloat16", "float16" or "int8": bf16 halves the pool's memory and what decode attention
    reads; int8 keeps each key and value of a kv head as int8 values and one fp32 scale
    (`kv_quant`: 68 bytes for 64 dims, 27% of fp32's).
    `compile_decode` runs decode-only steps that the kernels do not take (no compiler, a GPU, a
    model with adapters) through `torch.compile` (fused small ops).
    `quantization` "int8" stores every linear and embedding weight as int8 with one scale per
    row (`kernels.Int8Linear`, `kernels.Int8Embedding`): a quarter of fp32's memory and of the
    bytes read per decoded token, the activations and the KV pool unchanged.
    `keep_freed_memory` (CPU) makes glibc keep freed memory in the process, so that prompt
    chunks' activations reuse pages instead of faulting fresh ones in
    (`fullchain.model.memory.keep_freed_memory`: process-wide, for the process's life).
    `huge_pages` (CPU) moves the model's weights and the KV pool into memory backed by 2 MB
    transparent huge pages where Linux allows it (`fullchain.model.memory.huge_page_buffer`):
    everything a decode step streams through misses the TLB less and is prefetched across
    what were 4 KB page boundaries; the pool's pages are then also taken only when first used.
    """

    block_size: int = 16
    num_blocks: int | None = None
    kv_cache_gb: float = 1.0
    kv_cache_dtype: str = "auto"
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    seed: int = 0
    # torch.compile the model for decode-only steps without the fused layers (dynamic shapes,
    # one compilation at the first decode: a minute for a tiny model on 2 CPU cores, longer for
    # larger ones)
    compile_decode: bool = False
    decode_kernel: bool = True
    quantization: str | None = None
    keep_freed_memory: bool = True
    huge_pages: bool = True

    def __post_init__(self) -> None:
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise FullchainError(f"engine config '{name}' must be >= 1")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise FullchainError("engine config 'num_blocks' must be >= 1 (or None)")
        if self.kv_cache_gb <= 0:
            raise FullchainError("engine config 'kv_cache_gb' must be > 0")
        if self.quantization not in (None, *QUANTIZATIONS):
            raise FullchainError(f"engine config 'quantization' must be one of "
                                 f"{', '.join(QUANTIZATIONS)} (or None), not "
                                 f"{self.quantization!r}")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise FullchainError(f"engine config 'kv_cache_dtype' must be one of "
                                 f"{', '.join(KV_CACHE_DTYPES)}, not {self.kv_cache_dtype!r}")

    def kv_dtype(self, model_dtype: torch.dtype) -> torch.dtype:
        """The dtype of the KV pool for a model of `model_dtype`."""
        if self.kv_cache_dtype == "auto":
            return model_dtype
        return getattr(torch, self.kv_cache_dtype)
