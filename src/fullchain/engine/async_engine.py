"""The engine for asyncio servers: the step loop runs in one background thread, requests come
in and outputs go out through queues, so the event loop never waits on the model.

Only the engine thread touches the `Engine`. A stream that is closed early (the client went
away) sends an abort, and the request's KV blocks are freed at the next step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from fullchain.config import FullchainError
from fullchain.engine.engine import Engine, StepOutput
from fullchain.engine.params import SamplingParams

log = logging.getLogger(__name__)


class EngineBusy(FullchainError):
    """The request queue is full; retry later (HTTP 429)."""


class EngineDead(FullchainError):
    """The engine loop stopped; the server cannot take requests (HTTP 503)."""


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue


class AsyncEngine:
    """`async for out in engine.stream(ids, params)` yields `StepOutput`s until all n choices of
    the request have finished. At most `max_queued` requests wait for admission; past that,
    `stream` raises EngineBusy at once."""

    def __init__(self, engine: Engine, *, max_queued: int = 256) -> None:
        self.engine, self.max_queued = engine, max_queued
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, _Stream] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._queued = 0  # submitted, not yet added by the engine thread, plus waiting
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self.started = time.time()
        self._rate = [(time.monotonic(), 0)]  # (time, generated tokens) samples for tokens/s

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------ requests

    async def stream(self, prompt_ids: Sequence[int], params: SamplingParams,
                     request_id: str | None = None) -> AsyncIterator[StepOutput]:
        if not self.alive:
            raise EngineDead("the engine loop is not running; restart the server")
        if self.num_waiting() >= self.max_queued:
            raise EngineBusy(f"the server queue is full ({self.max_queued} requests waiting); "
                             "retry later or start the server with a larger --max-queued")
        rid = request_id or f"areq-{next(self._ids)}"
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        self._streams[rid] = stream
        self._queued += 1
        self._commands.put(("add", rid, list(prompt_ids), params))
        self._wake.set()
        remaining = params.n
        try:
            while remaining:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    raise item
                remaining -= item.finished
                yield item
        finally:
            self._streams.pop(rid, None)
            if remaining:  # closed early: free the request's blocks now
                self._commands.put(("abort", rid))
                self._wake.set()

    def num_waiting(self) -> int:
        return self._queued + len(self.engine.scheduler.waiting)

    def stats(self) -> dict[str, float]:
        """Figures for /metrics (read without locks: each one is a single read)."""
        kv, now = self.engine.kv, time.monotonic()
        total = self.engine.num_generated_tokens
        self._rate = [r for r in self._rate if now - r[0] < 10][-50:] + [(now, total)]
        t0, n0 = self._rate[0]
        return {
            "queue_length": self.num_waiting(),
            "running_requests": len(self.engine.scheduler.running),
            "kv_blocks_used": kv.num_used,
            "kv_blocks_free": kv.num_free,
            "prefix_cache_hit_rate": kv.hit_rate(),
            "generation_tokens_total": total,
            "generation_tokens_per_second": (total - n0) / (now - t0) if now > t0 else 0.0,
            "preemptions_total": self.engine.scheduler.num_preemptions,
        }

    # ------------------------------------------------------------ the engine thread

    def _run(self) -> None:
        while not self._stop.is_set():
            self._drain()
            if not self.engine.has_work():
                self._wake.wait(timeout=0.05)
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as e:  # a bug or an OOM: fail the running requests, keep serving
                log.exception("engine step failed")
                self._fail_all(e)
                continue
            for out in outputs:
                self._send(out.request_id, out)

    def _drain(self) -> None:
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            if cmd[0] == "add":
                _, rid, ids, params = cmd
                self._queued -= 1
                try:
                    self.engine.add_request(ids, params, request_id=rid)
                except FullchainError as e:
                    self._send(rid, e)
            elif cmd[0] == "abort":
                self.engine.abort(cmd[1])

    def _send(self, rid: str, item) -> None:
        stream = self._streams.get(rid)
        if stream is None:  # the client is gone
            self.engine.abort(rid)
            return
        stream.loop.call_soon_threadsafe(stream.queue.put_nowait, item)

    def _fail_all(self, error: Exception) -> None:
        for rid in list(self.engine.seqs):
            self.engine.abort(rid)
            self._send(rid, EngineStepError(f"the engine failed on this batch: {error}"))


class EngineStepError(FullchainError):
    """The model step failed; the requests in that batch are ended (HTTP 500 / error event)."""
