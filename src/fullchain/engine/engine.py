"""The engine: requests in, step by step: schedule -> run the model -> sample -> update.

`Engine` is synchronous and single-threaded: `add_request`, `abort`, `step` and the helpers
`generate` (batch, to completion) and `score` (log-likelihoods). `AsyncEngine`
(`fullchain.engine.async_engine`) runs the same loop in a thread for asyncio servers.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import torch

from fullchain.config import FullchainError
from fullchain.engine.kernels import quantize, weight_bytes
from fullchain.engine.kv_manager import KVBlockManager
from fullchain.engine.params import EngineConfig, SamplingParams
from fullchain.engine.runner import ModelRunner
from fullchain.engine.sampler import Sampled, prompt_logprob_entries, sample
from fullchain.engine.scheduler import ScheduledChunk, Scheduler, Sequence, Status
from fullchain.model.memory import keep_freed_memory
from fullchain.tokenizer import Tokenizer
from fullchain.tokenizer.stream import StopText

# (log-prob of the token, [(alternative id, log-prob), ...]) for each output or prompt token
Logprob = tuple[float, list[tuple[int, float]]]


class RequestError(FullchainError):
    """A request the engine cannot run as given (too long, bad parameters); names the fix."""


@dataclass
class StepOutput:
    """What one sequence produced in one step (the new token, or nothing when it finished on
    the prompt or was cut by a stop string)."""

    request_id: str
    index: int
    token_ids: list[int]
    text: str
    logprobs: list[Logprob] = field(default_factory=list)
    finished: bool = False
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_logprobs: list[Logprob | None] | None = None  # with the first output of a sequence


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]
    text: str
    logprobs: list[Logprob] | None
    finish_reason: str | None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_ids: list[int]
    outputs: list[CompletionOutput]
    prompt_logprobs: list[Logprob | None] | None = None  # aligned with the prompt; [0] is None
    num_cached_tokens: int = 0


class Engine:
    """Continuous batching over a paged KV pool with prefix caching, on the model's device.

    The engine owns `model` from then on: it is put in eval mode and, on the CPU, its linear
    layers become `kernels.DecodeLinear` (same parameters, few-row products through the decode
    kernel; decode-only steps through `kernels.FusedDecoder`) or, without the kernels, their
    weights are re-laid column-major in place (same values; see `runner.column_major_weights`).
    With `config.quantization` its linear layers become int8 first (`kernels.quantize`).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer | None = None,
                 config: EngineConfig | None = None) -> None:
        self.config = config = config or EngineConfig()
        self.model, self.tokenizer = model.eval(), tokenizer
        if config.quantization:
            quantize(model, config.quantization)
        self.max_model_len = config.max_model_len or model.config.max_position_embeddings
        param = next(model.parameters())
        if config.keep_freed_memory and param.device.type == "cpu":
            keep_freed_memory()
        kv_dtype = config.kv_dtype(param.dtype)
        num_blocks = config.num_blocks or self._blocks_for(model.config, kv_dtype)
        self.kv = KVBlockManager(num_blocks, config.block_size,
                                 enable_prefix_caching=config.enable_prefix_caching)
        self.scheduler = Scheduler(self.kv, max_num_seqs=config.max_num_seqs,
                                   max_num_batched_tokens=config.max_num_batched_tokens)
        self.runner = ModelRunner(model, num_blocks=num_blocks, block_size=config.block_size,
                                  kv_dtype=kv_dtype, compile_decode=config.compile_decode,
                                  decode_kernel=config.decode_kernel,
                                  huge_pages=config.huge_pages)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.seqs: dict[str, list[Sequence]] = {}  # request id -> its n sequences
        self.texts: dict[str, StopText] = {}  # seq id -> its incremental text
        self._ids = itertools.count()
        self.num_generated_tokens = 0

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, config: EngineConfig | None = None, *,
                        dtype: str = "float32", device: str = "cpu") -> Engine:
        from fullchain.checkpoint.pretrained import load_pretrained
        model, tok = load_pretrained(path, dtype=dtype, device=device)
        return cls(model, tok, config)

    def describe(self) -> str:
        """One line on what the engine holds: weights (and their memory), the KV pool, the
        decode path; what `fullchain serve` logs at start."""
        weight_mb = weight_bytes(self.model) / 1e6
        kind = self.config.quantization or str(self.runner.dtype).removeprefix("torch.")
        kv = self.runner.k_cache[0]
        kv_mb = self.kv.num_blocks * ModelRunner.kv_bytes_per_block(
            self.model.config, self.kv.block_size, kv.dtype) / 1e6
        path = ("CPU kernels" if self.runner.fused is not None else
                "PyTorch operators") + f" on {self.runner.device}"
        return (f"weights {weight_mb:,.1f} MB ({kind}); KV pool {self.kv.num_blocks:,} blocks "
                f"of {self.kv.block_size} tokens ({kv_mb:,.1f} MB, "
                f"{str(kv.dtype).removeprefix('torch.')}); decode: {path}")

    def _blocks_for(self, cfg, dtype: torch.dtype) -> int:
        per_block = ModelRunner.kv_bytes_per_block(cfg, self.config.block_size, dtype)
        by_memory = int(self.config.kv_cache_gb * 2**30) // per_block
        per_seq = -(-self.max_model_len // self.config.block_size)
        return max(per_seq, min(by_memory, per_seq * self.config.max_num_seqs))

    # ------------------------------------------------------------ requests

    def add_request(self, prompt_ids: Seq[int], params: SamplingParams | None = None,
                    request_id: str | None = None) -> str:
        """Queue a prompt (token ids); returns its request id. RequestError names the fix."""
        params = params or SamplingParams()
        prompt = [int(t) for t in prompt_ids]
        request_id = request_id or f"req-{next(self._ids)}"
        self._check(prompt, params, request_id)
        stop_ids = set() if params.ignore_eos else set(self._default_stop_ids())
        stop_ids |= set(params.stop_token_ids)
        seqs = []
        for i in range(params.n):
            gen = None
            if params.seed is not None:
                gen = torch.Generator().manual_seed(params.seed + i)
            seq = Sequence(f"{request_id}/{i}", request_id, i, len(prompt), list(prompt), params,
                           generator=gen, stop_ids=frozenset(stop_ids))
            if self.tokenizer is not None:
                decoder = self.tokenizer.stream_decoder(
                    skip_special_tokens=params.skip_special_tokens)
                self.texts[seq.seq_id] = StopText(decoder, params.stop,
                                                  include_stop=params.include_stop_str_in_output)
            seqs.append(seq)
            self.scheduler.add(seq)
        self.seqs[request_id] = seqs
        return request_id

    def _default_stop_ids(self) -> list[int]:
        if self.tokenizer is not None:
            return self.tokenizer.stop_token_ids
        eos = self.model.config.eos_token_id
        return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)

    def _check(self, prompt: list[int], params: SamplingParams, request_id: str) -> None:
        if request_id in self.seqs:
            raise RequestError(f"request id {request_id!r} is already running; use a new one")
        if not prompt:
            raise RequestError("the prompt is empty: give at least one token")
        vocab = self.model.config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise RequestError(f"prompt token ids must be in [0, {vocab}); got one outside")
        if len(prompt) > self.max_model_len or (
                params.max_tokens > 0 and len(prompt) >= self.max_model_len):
            raise RequestError(
                f"the prompt has {len(prompt)} tokens but the context holds {self.max_model_len}"
                "; shorten the prompt or start the engine with a larger max_model_len")
        if params.stop and self.tokenizer is None:
            raise RequestError("stop strings need a tokenizer; pass one to Engine(...)")
        bad = [t for t in params.logit_bias if not 0 <= int(t) < vocab]
        if bad:
            raise RequestError(f"logit_bias token ids must be in [0, {vocab}); got {bad[:3]}")
        longest = min(len(prompt) + params.max_tokens, self.max_model_len)
        if self.kv.blocks_needed(longest) > self.kv.num_blocks:
            raise RequestError(
                f"{longest} tokens need {self.kv.blocks_needed(longest)} KV blocks but the pool "
                f"has {self.kv.num_blocks}; lower max_tokens or raise num_blocks / kv_cache_gb")

    def abort(self, request_id: str) -> None:
        """Stop a request now and free its KV blocks (unknown or finished ids are ignored)."""
        for seq in self.seqs.pop(request_id, []):
            self.scheduler.finish(seq, "abort")
            self.texts.pop(seq.seq_id, None)

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    # ------------------------------------------------------------ the step

    def step(self) -> list[StepOutput]:
        """One step: schedule -> run the model -> sample -> update. Returns what changed."""
        batch = self.scheduler.schedule()
        if not batch.chunks:
            return []
        logits, prompt_logits = self.runner.run(batch.chunks)
        sampling = [c.seq for c in batch.chunks if c.sample]
        sampled = sample(logits, sampling, generator=self.generator)
        return self._update(batch.chunks, prompt_logits, dict(zip(sampling, sampled)))

    def _update(self, chunks: list[ScheduledChunk], prompt_logits: dict[int, torch.Tensor],
                sampled: dict[Sequence, Sampled]) -> list[StepOutput]:
        outputs = []
        for i, chunk in enumerate(chunks):
            seq = chunk.seq
            self.scheduler.advance(chunk)
            if i in prompt_logits:
                prompt_logprob_entries(prompt_logits[i], seq, chunk.start)
            if not chunk.sample:
                continue
            first = seq.num_output == 0
            if seq.params.max_tokens == 0:  # prompt only (scoring)
                out = self._finish(seq, "length", None, [])
            else:
                out = self._append(seq, sampled[seq])
            if first and seq.params.prompt_logprobs is not None:
                out.prompt_logprobs = [seq.prompt_logprobs.get(i) for i in range(seq.prompt_len)]
            outputs.append(out)
        return outputs

    def _append(self, seq: Sequence, s: Sampled) -> StepOutput:
        seq.token_ids.append(s.token_id)
        self.num_generated_tokens += 1
        logprobs = [] if s.logprob is None else [(s.logprob, s.top or [])]
        text, reason, stop_reason = "", None, None
        if s.token_id in seq.stop_ids:
            reason, stop_reason = "stop", s.token_id
        elif seq.seq_id in self.texts:
            text, hit = self.texts[seq.seq_id].push(s.token_id)
            if hit is not None:
                reason, stop_reason = "stop", hit
        if reason is None and (seq.num_output >= seq.params.max_tokens
                               or seq.num_tokens >= self.max_model_len):
            reason = "length"
        if reason is None:
            return StepOutput(seq.request_id, seq.index, [s.token_id], text, logprobs)
        out = self._finish(seq, reason, stop_reason, [s.token_id], logprobs)
        out.text = text + out.text
        return out

    def _finish(self, seq: Sequence, reason: str, stop_reason, token_ids: list[int],
                logprobs: list[Logprob] | None = None) -> StepOutput:
        self.scheduler.finish(seq, reason, stop_reason)
        text = self.texts.pop(seq.seq_id).flush() if seq.seq_id in self.texts else ""
        if all(s.status is Status.FINISHED for s in self.seqs.get(seq.request_id, [])):
            self.seqs.pop(seq.request_id, None)
        return StepOutput(seq.request_id, seq.index, token_ids, text, logprobs or [],
                          finished=True, finish_reason=reason, stop_reason=stop_reason)

    # ------------------------------------------------------------ helpers

    def generate(self, prompts: Seq[Seq[int] | str], params: SamplingParams | None = None,
                 ) -> list[RequestOutput]:
        """Run prompts (token ids, or text with a tokenizer) to completion, in input order."""
        params = params or SamplingParams()
        ids = [self._encode(p) for p in prompts]
        rids = [self.add_request(p, params) for p in ids]
        seqs = {rid: list(self.seqs[rid]) for rid in rids}
        results = {rid: {s.index: CompletionOutput(s.index, [], "", [] if params.logprobs
                                                   is not None else None, None)
                         for s in seqs[rid]} for rid in rids}
        while self.has_work():
            for out in self.step():
                if out.request_id not in results:
                    continue
                c = results[out.request_id][out.index]
                c.token_ids += out.token_ids
                c.text += out.text
                if c.logprobs is not None:
                    c.logprobs += out.logprobs
                if out.finished:
                    c.finish_reason, c.stop_reason = out.finish_reason, out.stop_reason
        return [self._request_output(rid, p, seqs[rid], results[rid])
                for rid, p in zip(rids, ids)]

    def stream(self, prompt: Seq[int] | str, params: SamplingParams | None = None,
               ) -> Iterator[StepOutput]:
        """Yield one request's outputs as they come (queued requests advance too); closing the
        iterator early aborts the request and frees its blocks."""
        params = params or SamplingParams()
        rid = self.add_request(self._encode(prompt), params)
        remaining = params.n
        try:
            while remaining:
                for out in self.step():
                    if out.request_id == rid:
                        remaining -= out.finished
                        yield out
        finally:
            if remaining:
                self.abort(rid)

    def _request_output(self, rid: str, prompt: list[int], seqs: list[Sequence],
                        outs: dict[int, CompletionOutput]) -> RequestOutput:
        first = seqs[0]
        plp = None
        if first.params.prompt_logprobs is not None:
            plp = [first.prompt_logprobs.get(i) for i in range(len(prompt))]
        return RequestOutput(rid, prompt, [outs[i] for i in sorted(outs)], plp, first.num_cached)

    def _encode(self, prompt: Seq[int] | str) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise RequestError("text prompts need a tokenizer; pass token ids instead")
            return self.tokenizer.encode(prompt, add_special_tokens=True)
        return list(prompt)

    def score(self, pairs: Seq[tuple[Seq[int], Seq[int]]]) -> list[tuple[float, bool]]:
        """(sum of log-probs of the continuation given the context, whether every continuation
        token is the greedy choice) for each (context ids, continuation ids) pair. Requests run
        batched; the first pair of each distinct context goes first, so that the others then
        take that context from the prefix cache."""
        if any(not ctx or not cont for ctx, cont in pairs):
            raise RequestError("score needs a non-empty context and continuation")
        leaders: dict[tuple, int] = {}
        for i, (ctx, _) in enumerate(pairs):
            leaders.setdefault(tuple(ctx), i)
        seqs: dict[int, Sequence] = {}

        def submit(i: int) -> None:
            ctx, cont = pairs[i]
            p = SamplingParams(max_tokens=0, prompt_logprobs=1, prompt_logprobs_from=len(ctx))
            seqs[i] = self.seqs[self.add_request(list(ctx) + list(cont), p)][0]

        for i in leaders.values():
            submit(i)
        while any(s.num_computed < len(pairs[i][0]) and s.status is not Status.FINISHED
                  for i, s in seqs.items()):
            self.step()
        for i in range(len(pairs)):
            if i not in seqs:
                submit(i)
        while self.has_work():
            self.step()
        outs = []
        for i, (ctx, cont) in enumerate(pairs):
            entries = [seqs[i].prompt_logprobs[j] for j in range(len(ctx), len(ctx) + len(cont))]
            greedy = all(lp >= top[0][1] - 1e-6 for lp, top in entries)
            outs.append((sum(lp for lp, _ in entries), greedy))
        return outs
