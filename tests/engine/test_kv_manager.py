"""Block pool: reference counts, prefix hashes, LRU eviction, and no leak under churn."""

import random

import pytest

from fullchain.engine import Engine, EngineConfig, SamplingParams
from fullchain.engine.kv_manager import KVBlockManager


def test_allocate_release_and_ref_counts():
    kv = KVBlockManager(8, 4)
    a, b = [], []
    kv.allocate(a, 9)  # 3 blocks
    assert len(a) == 3 and kv.num_free == 5
    kv.allocate(a, 12)  # still 3
    assert len(a) == 3
    kv.allocate(b, 1, cached=a[:2])  # shares two blocks, no new one needed
    assert b == a[:2] and kv.ref_count[a[0]] == 2 and kv.num_free == 5
    kv.release(list(a))
    assert kv.num_free == 6 and kv.ref_count[b[0]] == 1
    kv.release(b)
    kv.check_all_free()
    with pytest.raises(AssertionError):
        kv.release([0])  # a block released twice is a bug, caught at once


def test_prefix_match_register_and_lru_eviction():
    kv = KVBlockManager(4, 2)
    tokens = [1, 2, 3, 4, 5]
    table = []
    kv.allocate(table, 5)
    for i, h in enumerate(kv.prefix_hashes(tokens, 2)):
        kv.register(table[i], h)
    assert kv.match_prefix(tokens, 4) == table[:2]
    assert kv.match_prefix(tokens, 3) == table[:1]  # capped: one token must stay to compute
    assert kv.match_prefix([1, 2, 9, 9], 4) == table[:1]  # chained: block 2 differs
    blocks = list(table)
    kv.release(table)  # empties the table
    assert table == [] and kv.match_prefix(tokens, 4) == blocks[:2]  # free but still cached
    # allocation takes least recently used blocks first: the never-used one, then the tail
    # (a table's new blocks in ascending order)
    other = []
    kv.allocate(other, 4)
    assert other == sorted([3, blocks[2]])
    assert kv.match_prefix(tokens, 4) == blocks[:2]
    kv.allocate(other, 8)  # uses every block: the cached ones are evicted
    assert kv.match_prefix(tokens, 4) == []
    kv.release(other)
    kv.check_all_free()


def test_a_table_grows_into_the_block_after_its_last_one():
    """A sequence's blocks tend to lie one after another (the decode attention reads them in one
    stretch): a table takes the block after its last one when that block is free and caches
    nothing, whatever the LRU order; a cached block stays for its prefix; the blocks one
    allocation takes from the LRU list go into the table in ascending order."""
    kv = KVBlockManager(12, 2)
    a, b, c = [], [], []
    kv.allocate(a, 6)  # blocks 0, 1, 2
    kv.allocate(b, 2)  # 3
    kv.release(b)  # 3 is free again, behind 4..11 in the LRU order
    kv.allocate(a, 8)
    assert a == [0, 1, 2, 3]  # not 4, the least recently used
    kv.allocate(c, 2)  # 4
    kv.register(4, b"cached")
    kv.release(c)
    kv.allocate(a, 10)
    assert a[-1] == 5 and kv.hash_of[4] == b"cached"  # 4 keeps its prefix; the LRU front: 5
    kv.release(a)  # 5, 3, 2, 1, 0 free, in that order, behind 6..11 and 4
    d, e = [], []
    kv.allocate(d, 2 * 8)  # 6..11, then 4 (cached, evicted) and 5
    assert d == [4, 5, 6, 7, 8, 9, 10, 11]
    kv.allocate(e, 2 * 4)  # the rest of the list, freed in descending order: 3, 2, 1, 0
    assert e == [0, 1, 2, 3]
    kv.release(d)
    kv.release(e)
    kv.check_all_free()


def test_prefix_caching_off_never_matches():
    kv = KVBlockManager(4, 2, enable_prefix_caching=False)
    table = []
    kv.allocate(table, 4)
    for i, h in enumerate(kv.prefix_hashes([1, 2, 3, 4], 2)):
        kv.register(table[i], h)
    assert kv.match_prefix([1, 2, 3, 4, 5], 4) == []


@pytest.mark.slow
def test_thousand_random_requests_with_cancellations_return_every_block(tiny_model):
    rng = random.Random(0)
    engine = Engine(tiny_model, None, EngineConfig(num_blocks=60, block_size=4, max_num_seqs=32,
                                                   max_num_batched_tokens=64))
    heads = [[rng.randrange(300) for _ in range(rng.randrange(4, 12))] for _ in range(5)]
    live: list[str] = []
    added = finished = aborted = 0
    while added < 1000 or engine.has_work():
        for _ in range(rng.randrange(0, 8)):
            if added == 1000:
                break
            prompt = rng.choice(heads) + [rng.randrange(300) for _ in range(rng.randrange(1, 16))]
            params = SamplingParams(max_tokens=rng.randrange(0, 10), n=rng.choice([1, 1, 2]),
                                    temperature=rng.choice([0.0, 1.0]), seed=rng.randrange(9))
            live.append(engine.add_request(prompt, params))
            added += 1
        for _ in range(rng.randrange(0, 3)):
            if live and rng.random() < 0.3:  # a cancel, or a client that went away
                engine.abort(live.pop(rng.randrange(len(live))))
                aborted += 1
        finished += sum(o.finished for o in engine.step())
    assert aborted > 50 and finished > 500
    assert engine.scheduler.num_preemptions > 0
    engine.kv.check_all_free()
    assert not engine.seqs and not engine.texts
