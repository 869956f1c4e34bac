"""`keep_freed_memory`: a large activation freed and allocated again reuses its pages."""

import resource
import sys

import pytest
import torch

from fullchain.model.memory import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_activations_do_not_fault_their_pages_again():
    assert keep_freed_memory()
    size = 64 * 2**20  # above glibc's largest mmap threshold: without the setting each
    pages = size // 4096  # allocation is a fresh mmap, and touching it faults every page
    faults = []
    for _ in range(16):  # the first few grow the heap until a freed block fits the next one
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(size // 4).fill_(1.0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    assert sum(faults[8:]) < pages // 10, f"page faults per allocation: {faults}"
