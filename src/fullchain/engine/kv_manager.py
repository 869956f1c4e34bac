"""The KV block manager: a pool of fixed-size blocks, reference counts and prefix hashes.

It hands out block tables (lists of block ids), never tensors: the model runner owns the KV
tensors and reads a block table as "token i of this sequence lives in slot
table[i // block_size] * block_size + i % block_size".

Prefix caching: a block that is full is registered under a hash of its tokens chained with the
hash of the block before it, so equal prefixes give equal hashes. A new sequence starts from
the longest run of registered blocks that match its prompt, sharing them (ref count + 1).
Blocks whose ref count falls to 0 stay registered in a free list ordered least-recently-used
first; allocation takes from the front of that list and evicts the hash of what it takes.

A sequence's blocks are kept one after another where the pool allows, as the decode attention
reads a kv head's consecutive blocks in one stretch: a table grows into the block after its
last one when that block is free and caches nothing (whatever its place in the LRU order), and
the blocks one allocation takes go into the table in ascending order (a table freed tail first
comes back as a descending run).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np


def block_hash(parent: bytes | None, tokens: Sequence[int]) -> bytes:
    """Content hash of one full block, chained to the hash of the block before it."""
    h = hashlib.blake2b(parent or b"", digest_size=16)
    h.update(np.asarray(tokens, dtype=np.int64).tobytes())
    return h.digest()


class KVBlockManager:
    """Owns `num_blocks` blocks of `block_size` token slots.

    Invariants: every block is either referenced (ref count > 0) or in the free list, never
    both; a registered hash maps to exactly one block. `num_free` counts evictable blocks too.
    """

    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, "
                             f"{block_size}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_count = [0] * num_blocks
        self.hash_of: list[bytes | None] = [None] * num_blocks
        self.block_of: dict[bytes, int] = {}
        self.free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self.hits = 0  # prompt tokens served from the prefix cache
        self.queries = 0  # prompt tokens looked up

    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self.free)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ------------------------------------------------------------ prefix cache

    def prefix_hashes(self, tokens: Sequence[int], num_blocks: int,
                      start: int = 0, parent: bytes | None = None) -> list[bytes]:
        """Chained hashes of blocks start .. num_blocks-1 of `tokens` (all full)."""
        out, bs = [], self.block_size
        for i in range(start, num_blocks):
            parent = block_hash(parent, tokens[i * bs:(i + 1) * bs])
            out.append(parent)
        return out

    def match_prefix(self, tokens: Sequence[int], max_tokens: int) -> list[int]:
        """Registered blocks holding the longest cached prefix of `tokens`, at most `max_tokens`
        tokens long (callers keep at least one token to compute). Does not take references."""
        if not self.enable_prefix_caching:
            return []
        hashes = self.prefix_hashes(tokens, max(0, max_tokens) // self.block_size)
        blocks = []
        for h in hashes:
            b = self.block_of.get(h)
            if b is None:
                break
            blocks.append(b)
        self.queries += len(tokens)
        self.hits += len(blocks) * self.block_size
        return blocks

    def register(self, block: int, h: bytes) -> None:
        """Record that `block` (full, referenced) holds the tokens hashed to `h`."""
        if not self.enable_prefix_caching or self.hash_of[block] is not None:
            return
        if h not in self.block_of:  # a twin computed in the same step keeps the first
            self.block_of[h] = block
            self.hash_of[block] = h

    # ------------------------------------------------------------ allocation

    def can_allocate(self, table: Sequence[int], cached: Sequence[int], num_tokens: int) -> bool:
        """Whether a table that has `table` and would adopt `cached` can grow to `num_tokens`."""
        revived = sum(1 for b in cached if self.ref_count[b] == 0)
        new = self.blocks_needed(num_tokens) - len(table) - len(cached)
        return max(0, new) + revived <= self.num_free

    def allocate(self, table: list[int], num_tokens: int, cached: Sequence[int] = ()) -> None:
        """Grow `table` in place: adopt the `cached` blocks, then fresh ones up to `num_tokens`
        (the block after the last one where it is free and caches nothing, else the least
        recently used; in ascending order). The caller checked `can_allocate` first."""
        for b in cached:
            if self.ref_count[b] == 0:
                del self.free[b]
            self.ref_count[b] += 1
            table.append(b)
        fresh: list[int] = []
        for _ in range(self.blocks_needed(num_tokens) - len(table)):
            last = fresh[-1] if fresh else table[-1] if table else None
            b = -1 if last is None else last + 1  # the block after the last one, if it is
            if b in self.free and self.hash_of[b] is None:  # free and caches nothing
                del self.free[b]
            else:
                b, _ = self.free.popitem(last=False)  # least recently used first
            h = self.hash_of[b]
            if h is not None:  # evict its cached content
                del self.block_of[h]
                self.hash_of[b] = None
            self.ref_count[b] = 1
            fresh.append(b)
        table.extend(sorted(fresh))

    def release(self, table: list[int]) -> None:
        """Drop one reference to each block of `table` and empty it. Tail blocks are freed first,
        so they are evicted before the shared head of a prefix."""
        for b in reversed(table):
            assert self.ref_count[b] > 0, f"block {b} released twice"
            self.ref_count[b] -= 1
            if self.ref_count[b] == 0:
                self.free[b] = None
        table.clear()

    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0

    def check_all_free(self) -> None:
        """Assert that no block is referenced (for tests and shutdown)."""
        used = [b for b, r in enumerate(self.ref_count) if r]
        assert not used and self.num_free == self.num_blocks, f"blocks still referenced: {used}"
