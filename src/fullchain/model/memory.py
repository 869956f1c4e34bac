"""CPU memory behaviour of the process that runs a model."""

from __future__ import annotations

import functools
import mmap
from collections.abc import Iterable

import torch


@functools.cache  # once a process
def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process (no mmap for large blocks, no trimming).

    PyTorch has no caching allocator on the CPU: every activation of a training step or a
    prompt chunk is a fresh malloc, and glibc serves large ones with mmap and unmaps them on
    free, so each step faults all its activation pages in again (a fresh 12 MB tensor costs
    ~5 ms here against ~1.4 ms for reused memory). `bench/bench_train.py --same-allocator`
    measured transformers' step +34% tokens/s with it on the tiny config and +32% on the 135M
    shape, peak RSS up to 10%; the engine's prompts ~5-15% (README). Process-wide and for the
    process's life. Returns False where the C library has no mallopt (not glibc)."""
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


_HUGE_PAGE = 2 << 20  # a transparent huge page (x86-64; arm64 with 4 KB pages)


def huge_page_buffer(nbytes: int) -> torch.Tensor:
    """`nbytes` of zeroed CPU memory (uint8) that the kernel backs with transparent huge pages
    where it can (Linux, THP "always" or "madvise"): 2 MB pages instead of 4 KB.

    Memory read from end to end at every step (a model's weights at each decoded token, the KV
    pool) then misses the TLB 512x less often and the hardware prefetchers run on across what
    were 4 KB page boundaries: batch-1 decode of the 135M shape 1.03x fp32, 1.06x bf16 (README).
    Elsewhere, or without THP, plain memory. The tensor keeps its mapping alive; the mapping is
    unmapped when the last tensor viewing it is freed."""
    try:
        area = mmap.mmap(-1, nbytes + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        area.madvise(mmap.MADV_HUGEPAGE)  # before the first touch: faults take whole pages
    except (AttributeError, OSError, ValueError):  # not Linux, or no THP in this kernel
        return torch.zeros(nbytes, dtype=torch.uint8)
    buffer = torch.frombuffer(area, dtype=torch.uint8)  # holds `area` alive
    start = -buffer.data_ptr() % _HUGE_PAGE
    return buffer[start:start + nbytes]


def move_to_huge_pages(tensors: Iterable[torch.Tensor]) -> int:
    """Move the CPU tensors (parameters or buffers) into one `huge_page_buffer`, in place
    (`.data` swapped: the same Python objects, so modules and lists holding them follow);
    tensors sharing a storage keep sharing one. Returns the bytes moved. Tensors that do not
    start at their storage's start are left alone, as are those under 64 KB (a huge page's
    worth of small ones is not worth the copy)."""
    chosen: dict[int, list[torch.Tensor]] = {}  # storage address -> the tensors on it
    for t in tensors:
        if (t.device.type == "cpu" and t.storage_offset() == 0
                and t.untyped_storage().nbytes() >= 1 << 16):
            same = chosen.setdefault(t.untyped_storage().data_ptr(), [])
            if all(t is not other for other in same):
                same.append(t)
    if not chosen:
        return 0
    sizes = [-(-ts[0].untyped_storage().nbytes() // 64) * 64 for ts in chosen.values()]
    buffer, offset = huge_page_buffer(sum(sizes)), 0
    for ts, size in zip(chosen.values(), sizes):
        old = torch.empty(0, dtype=torch.uint8).set_(ts[0].untyped_storage())  # its bytes
        storage = buffer[offset:offset + old.numel()]
        storage.copy_(old)
        for t in ts:
            t.data = storage.view(t.dtype).as_strided(t.shape, t.stride())
        offset += size
    return offset
