"""`keep_freed_memory`: a large activation freed and allocated again reuses its pages;
`huge_page_buffer` and `move_to_huge_pages`: memory backed by transparent huge pages."""

import resource
import sys

import pytest
import torch

from fullchain.model import ModelConfig, Transformer, memory
from fullchain.model.memory import huge_page_buffer, keep_freed_memory, move_to_huge_pages


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


def _thp_enabled() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def _huge_kb(address: int) -> int:
    """AnonHugePages of the mapping holding `address`, from /proc/self/smaps."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and head == "AnonHugePages:":
                return int(line.split()[1])
    return 0


def test_huge_page_buffer_is_zeroed_aligned_and_writable():
    buffer = huge_page_buffer(5 * 2**20 + 3)
    assert buffer.dtype == torch.uint8 and buffer.numel() == 5 * 2**20 + 3
    assert int(buffer.max()) == 0
    buffer.view(-1)[:8] = 7
    assert buffer[:8].tolist() == [7] * 8
    if sys.platform.startswith("linux"):
        assert buffer.data_ptr() % (2 << 20) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _thp_enabled(),
                    reason="transparent huge pages")
def test_huge_page_buffer_gets_huge_pages():
    buffer = huge_page_buffer(8 << 20)
    buffer.fill_(1)  # the first touch takes the pages
    assert _huge_kb(buffer.data_ptr()) >= 2048


def test_huge_page_buffer_falls_back_to_plain_memory(monkeypatch):
    def no_mmap(*args, **kwargs):
        raise OSError("no mmap here")
    monkeypatch.setattr(memory.mmap, "mmap", no_mmap)
    buffer = huge_page_buffer(1000)
    assert buffer.numel() == 1000 and int(buffer.max()) == 0


def test_move_to_huge_pages_keeps_values_objects_and_ties():
    cfg = ModelConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, tie_word_embeddings=True)
    model = Transformer(cfg)
    model.init_weights(seed=0)
    model.eval()
    down = model.model.layers[0].mlp.down_proj
    down.weight.data = down.weight.data.t().contiguous().t()  # column-major, as the engine does
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        before = model(ids)
    params = {name: p for name, p in model.named_parameters()}
    strides = down.weight.stride()
    small = model.model.norm.weight.data_ptr()  # 256 bytes: left where it is
    moved = move_to_huge_pages([*model.parameters(), *model.buffers()])
    assert moved >= 300 * 64 * 4
    assert all(p is params[name] for name, p in model.named_parameters())
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert down.weight.stride() == strides
    assert model.model.norm.weight.data_ptr() == small
    with torch.no_grad():
        assert torch.equal(model(ids), before)


def test_move_to_huge_pages_keeps_a_shared_storage_shared():
    a = torch.arange(40_000, dtype=torch.float32)
    b = a.view(200, 200)  # another tensor on the same storage
    assert move_to_huge_pages([a, b, a]) == 160_000
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    a[0] = 7.0
    assert b[0, 0] == 7.0 and torch.equal(b[1:], torch.arange(200, 40_000.0).view(199, 200))
