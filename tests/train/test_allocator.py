"""`keep_freed_memory`: a large activation freed and allocated again reuses its pages."""

import resource
import sys

import pytest
import torch

from fullchain.train.parallel import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_activations_do_not_fault_their_pages_again():
    assert keep_freed_memory()
    size = 64 * 2**20  # above glibc's largest mmap threshold: without the setting each
    pages = size // 4096  # allocation is a fresh mmap, and touching it faults every page
    for _ in range(2):  # the heap grows to hold it
        torch.empty(size // 4).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        torch.empty(size // 4).fill_(1.0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < pages // 10, f"{faults} page faults for 4 x {pages} pages"
