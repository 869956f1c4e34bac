"""The scheduler: pure Python. Each step it picks which sequences advance and by how many tokens.

Continuous batching: running sequences advance every step and finished ones leave at once;
waiting ones join whenever the token budget and the KV pool allow. Decodes (1 token) are
scheduled before prompt chunks, and a long prompt is prefilled a chunk at a time within the
budget, so it never stalls the running decodes. When the pool runs out, the most recently
admitted sequence is preempted: its blocks are freed and it goes back to the front of the queue,
to be recomputed from its prompt plus the tokens it already produced (output is never lost).
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from dataclasses import dataclass, field

import torch

from fullchain.engine.kv_manager import KVBlockManager
from fullchain.engine.params import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


_arrival = itertools.count()


@dataclass(eq=False)
class Sequence:
    """One generated sequence (a request with n > 1 has n of them)."""

    seq_id: str
    request_id: str
    index: int  # which of the request's n choices
    prompt_len: int
    token_ids: list[int]  # prompt, then output
    params: SamplingParams
    generator: torch.Generator | None = None
    stop_ids: frozenset[int] = frozenset()
    status: Status = Status.WAITING
    num_computed: int = 0  # tokens whose KV is in the cache
    num_cached: int = 0  # prompt tokens taken from the prefix cache at admission
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[bytes] = field(default_factory=list)  # of the leading full blocks
    prompt_logprobs: dict[int, tuple] = field(default_factory=dict)  # position -> entry
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    arrival: int = field(default_factory=lambda: next(_arrival))

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.prompt_len:]

    @property
    def num_output(self) -> int:
        return len(self.token_ids) - self.prompt_len

    def wants_prompt_logprobs(self) -> bool:
        return self.params.prompt_logprobs is not None


@dataclass(frozen=True)
class ScheduledChunk:
    """`seq` computes tokens [start, start + num_tokens); `sample` when that reaches its end."""

    seq: Sequence
    start: int
    num_tokens: int
    sample: bool


@dataclass
class SchedulerOutput:
    chunks: list[ScheduledChunk]
    preempted: list[Sequence]

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks)


class Scheduler:
    def __init__(self, kv: KVBlockManager, *, max_num_seqs: int,
                 max_num_batched_tokens: int) -> None:
        self.kv = kv
        self.max_num_seqs, self.token_budget = max_num_seqs, max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        budget = self.token_budget
        chunks: list[ScheduledChunk] = []
        preempted: list[Sequence] = []
        # decodes first, then the prompt chunks of running sequences, each in admission order
        order = sorted(self.running, key=lambda s: (s.num_tokens - s.num_computed > 1, s.arrival))
        pos = 0
        while pos < len(order) and budget > 0:
            seq = order[pos]
            n = min(seq.num_tokens - seq.num_computed, budget)
            if self.kv.can_allocate(seq.block_table, (), seq.num_computed + n):
                self.kv.allocate(seq.block_table, seq.num_computed + n)
                chunks.append(self._chunk(seq, n))
                budget -= n
                pos += 1
                continue
            victim = max(order[pos:], key=lambda s: s.arrival)  # latest admitted, not yet run
            order.remove(victim)
            self._preempt(victim)
            preempted.append(victim)
        if not preempted:
            chunks += self._admit(budget)
        return SchedulerOutput(chunks, preempted)

    def _admit(self, budget: int) -> list[ScheduledChunk]:
        chunks = []
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            # keep at least one token to compute (its logits are needed), and keep the
            # positions whose prompt log-probs are wanted out of the cache
            limit = seq.num_tokens - 1
            if seq.wants_prompt_logprobs() and len(seq.prompt_logprobs) < seq.prompt_len - 1:
                limit = min(limit, seq.params.prompt_logprobs_from - 1)
            cached = self.kv.match_prefix(seq.token_ids, limit)
            start = len(cached) * self.kv.block_size
            n = min(seq.num_tokens - start, budget)
            if not self.kv.can_allocate(seq.block_table, cached, start + n):
                break
            self.waiting.popleft()
            self.kv.allocate(seq.block_table, start + n, cached)
            seq.block_hashes = self.kv.prefix_hashes(seq.token_ids, len(cached))
            seq.num_computed = start
            if seq.num_output == 0:
                seq.num_cached = start
            seq.status = Status.RUNNING
            self.running.append(seq)
            chunks.append(self._chunk(seq, n))
            budget -= n
        return chunks

    def _chunk(self, seq: Sequence, n: int) -> ScheduledChunk:
        return ScheduledChunk(seq, seq.num_computed, n, seq.num_computed + n == seq.num_tokens)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.kv.release(seq.block_table)
        seq.block_hashes = []
        seq.num_computed = 0
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def advance(self, chunk: ScheduledChunk) -> None:
        """After the model ran a chunk: count it as computed and register its full blocks."""
        seq = chunk.seq
        seq.num_computed = chunk.start + chunk.num_tokens
        full = seq.num_computed // self.kv.block_size
        if self.kv.enable_prefix_caching and full > len(seq.block_hashes):
            parent = seq.block_hashes[-1] if seq.block_hashes else None
            new = self.kv.prefix_hashes(seq.token_ids, full, len(seq.block_hashes), parent)
            for i, h in enumerate(new, start=len(seq.block_hashes)):
                self.kv.register(seq.block_table[i], h)
            seq.block_hashes += new

    def finish(self, seq: Sequence, reason: str, stop_reason: int | str | None = None) -> None:
        """Remove `seq` from the queues and return its blocks to the pool (idempotent)."""
        if seq.status is Status.FINISHED:
            return
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self.kv.release(seq.block_table)
        seq.status, seq.finish_reason, seq.stop_reason = Status.FINISHED, reason, stop_reason
