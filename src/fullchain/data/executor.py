"""Run shard tasks: in this process (1 worker), on N local worker processes, or on Ray.

``run_tasks(fn, tasks, ...)`` calls ``fn(*args)`` for each task and hands each result to
``on_done(key, result)`` as it finishes, in completion order; the caller writes the completion
marker there, so a task's marker exists only once its files are in place.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from fullchain.config import DataError

Task = tuple[Any, tuple]  # (key, args)


def run_tasks(fn: Callable[..., Any], tasks: list[Task], on_done: Callable[[Any, Any], None], *,
              workers: int, executor: str = "local", ray_address: str = "") -> None:
    if not tasks:
        return
    if executor == "ray":
        _run_ray(fn, tasks, on_done, workers=workers, address=ray_address)
    elif workers <= 1:
        for key, args in tasks:
            on_done(key, fn(*args))
    else:
        _run_pool(fn, tasks, on_done, workers=workers)


def _run_pool(fn, tasks: list[Task], on_done, *, workers: int) -> None:
    # spawn: the workers must not inherit locks or threads of the parent (torch, rayon)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
        pending = {pool.submit(fn, *args): key for key, args in tasks}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                key = pending.pop(fut)
                on_done(key, fut.result())


def _run_ray(fn, tasks: list[Task], on_done, *, workers: int, address: str) -> None:
    try:
        import ray
    except ImportError as e:
        raise DataError("executor: ray needs the ray extra: pip install 'fullchain[ray]'") from e
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(fn)
        pending = {remote.remote(*args): key for key, args in tasks}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                on_done(pending.pop(ref), ray.get(ref))
    finally:
        if started:
            ray.shutdown()
