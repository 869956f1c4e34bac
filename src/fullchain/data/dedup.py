"""Exact and fuzzy dedup over all shards, in two passes with bounded memory.

Pass 1 (per shard, in the workers): :class:`DedupIndexWriter` stores, per key — the exact
content hash as key 0 and the LSH band hashes as keys 1..bands — the shard's hashes sorted,
with the document index of each, plus the signatures (for optional verification).

Pass 2 (:func:`find_duplicates`, one process): for each key and each slice of the 64-bit hash
range, it cuts the matching run out of every shard's sorted array (binary search on a memmap),
so at most about ``bucket_entries`` hashes are in memory at once; documents sharing a hash are
joined with union-find. Each cluster keeps its first document (lowest shard, then position) and
the others are removed as ``exact_duplicate`` (same content hash as the kept one) or
``near_duplicate``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fullchain.data.config import DedupConfig
from fullchain.data.minhash import MinHasher, estimated_jaccard
from fullchain.data.text import content_key, hash64

_BATCH = 256


def hasher_for(cfg: DedupConfig) -> MinHasher:
    return MinHasher(shingle_words=cfg.shingle_words, bands=cfg.bands, rows=cfg.rows,
                     seed=cfg.seed)


class DedupIndexWriter:
    """Collect one shard's documents (``add(text)`` in shard order) and ``close()`` to write
    ``<dir>/<shard>.{hashes,order,sig}.npy`` and ``<dir>/<shard>.docs.jsonl``."""

    def __init__(self, dir: Path, shard: int, cfg: DedupConfig, *, exact: bool,
                 fuzzy: bool) -> None:
        self.dir, self.shard, self.cfg = Path(dir), shard, cfg
        self.exact, self.fuzzy = exact, fuzzy
        self.hasher = hasher_for(cfg)
        self.pending: list[str] = []
        self.content: list[int] = []
        self.bands: list[np.ndarray] = []
        self.sigs: list[np.ndarray] = []
        self.heads: list[dict] = []

    def add(self, doc_id: str, text: str, *, skip: bool = False) -> None:
        """Add a document; ``skip`` ones are never matched (they get unique hashes)."""
        n = len(self.content)
        self.content.append(hash64(content_key(text)) if not skip else hash64(f"skip:{n}:{doc_id}"))
        self.heads.append({"id": doc_id, "head": " ".join(text[:100].split()), "skip": skip})
        self.pending.append(text if not skip else "")
        if len(self.pending) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        if self.fuzzy:
            sig, has = self.hasher.signatures(self.pending)
            bands = self.hasher.band_hashes(sig)
            # documents without shingles (or skipped) must never collide: unique band hashes
            start = len(self.content) - len(self.pending)
            for i in np.flatnonzero(~has):
                bands[i] = hash64(f"noshingle:{self.shard}:{start + i}") + \
                    np.arange(self.cfg.bands, dtype=np.uint64)
            self.bands.append(bands)
            self.sigs.append(sig)
        self.pending = []

    def close(self) -> None:
        self._flush()
        keys = [np.array(self.content, dtype=np.uint64)]  # key 0: used when exact dedup is on
        if self.fuzzy:
            bands = np.concatenate(self.bands) if self.bands else \
                np.zeros((0, self.cfg.bands), np.uint64)
            keys += list(bands.T)
        hashes = np.stack(keys) if keys else np.zeros((0, 0), np.uint64)
        order = np.argsort(hashes, axis=1, kind="stable").astype(np.uint32)
        base = self.dir / f"{self.shard:05d}"
        self.dir.mkdir(parents=True, exist_ok=True)
        _save(f"{base}.hashes.npy", np.take_along_axis(hashes, order, axis=1))
        _save(f"{base}.order.npy", order)
        _save(f"{base}.content.npy", np.array(self.content, dtype=np.uint64))
        if self.fuzzy:
            sigs = np.concatenate(self.sigs) if self.sigs else np.zeros((0, 1), np.uint32)
            _save(f"{base}.sig.npy", sigs)
        tmp = f"{base}.docs.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(h, ensure_ascii=False) + "\n" for h in self.heads)
        os.replace(tmp, f"{base}.docs.jsonl")


def _save(path: str, arr: np.ndarray) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller id is the root: it is the document kept
            self.parent[max(ra, rb)] = min(ra, rb)


def _gid(shard: int, idx: int) -> int:
    return (shard << 32) | idx


def find_duplicates(dir: Path, shards: list[int], cfg: DedupConfig, *, exact: bool) -> dict:
    """Cluster duplicates across ``shards`` (by content hash when ``exact``, by LSH bands when
    the index has them); write ``<shard>.remove.json`` per shard and
    ``clusters.jsonl``; return ``{"removed": {reason: n}, "clusters": n}``."""
    dir = Path(dir)
    hashes = {s: np.load(dir / f"{s:05d}.hashes.npy", mmap_mode="r") for s in shards}
    orders = {s: np.load(dir / f"{s:05d}.order.npy", mmap_mode="r") for s in shards}
    num_keys = max((h.shape[0] for h in hashes.values()), default=0)
    total = sum(h.shape[1] for h in hashes.values())
    slices = max(1, -(-total // cfg.bucket_entries))
    edges = [(2**64 * i) // slices for i in range(slices + 1)]
    uf = _UnionFind()
    sigs = {}
    if cfg.threshold > 0:
        sigs = {s: np.load(dir / f"{s:05d}.sig.npy", mmap_mode="r") for s in shards}
    for key in range(0 if exact else 1, num_keys):
        for lo, hi in zip(edges[:-1], edges[1:]):
            _join_slice(uf, hashes, orders, key, lo, hi, sigs=sigs, threshold=cfg.threshold)
    return _write_clusters(dir, shards, uf)


def _join_slice(uf: _UnionFind, hashes: dict, orders: dict, key: int, lo: int, hi: int, *,
                sigs: dict, threshold: float) -> None:
    parts_h, parts_g = [], []
    for s, h in hashes.items():
        row = h[key]
        a = int(np.searchsorted(row, np.uint64(lo), "left"))
        b = len(row) if hi >= 2**64 else int(np.searchsorted(row, np.uint64(hi), "left"))
        if b > a:
            parts_h.append(_read_run(h, key, a, b))
            parts_g.append((np.uint64(s) << np.uint64(32)) |
                           _read_run(orders[s], key, a, b).astype(np.uint64))
    if not parts_h:
        return
    h = np.concatenate(parts_h)
    g = np.concatenate(parts_g)
    order = np.lexsort((g, h))
    h, g = h[order], g[order]
    same = np.flatnonzero(h[1:] == h[:-1])
    for i in same:
        a, b = int(g[i]), int(g[i + 1])
        if threshold > 0 and key > 0:
            sa, sb = sigs[a >> 32][a & 0xFFFFFFFF], sigs[b >> 32][b & 0xFFFFFFFF]
            if estimated_jaccard(sa, sb) < threshold:
                continue
        uf.union(a, b)


def _read_run(mm: np.memmap, key: int, a: int, b: int) -> np.ndarray:
    """Row ``key``'s entries [a, b), read from the file rather than through the mapping, so
    that the pages the cluster pass is done with never count in its resident memory."""
    offset = mm.offset + (key * mm.shape[1] + a) * mm.dtype.itemsize
    return np.fromfile(mm.filename, dtype=mm.dtype, count=b - a, offset=offset)


def _write_clusters(dir: Path, shards: list[int], uf: _UnionFind, *,
                    max_listed: int = 1000) -> dict:
    """Each removed document with its cluster's kept one, as arrays (memory: a few numbers per
    duplicate, never per document); ``<shard>.remove.json`` written shard by shard, and the
    ``max_listed`` largest clusters (with the heads of their first members) in clusters.jsonl."""
    removed = np.fromiter(uf.parent.keys(), dtype=np.int64, count=len(uf.parent))
    removed.sort()
    kept = np.fromiter((uf.find(int(x)) for x in removed), dtype=np.int64, count=len(removed))
    content = {s: np.load(dir / f"{s:05d}.content.npy", mmap_mode="r") for s in shards}
    exact = _content_of(removed, content) == _content_of(kept, content)
    roots, sizes = np.unique(kept, return_counts=True)
    listed = roots[np.lexsort((roots, -sizes))[:max_listed]]
    by_kept = np.lexsort((removed, kept))  # each cluster's removed documents, in order
    starts = np.searchsorted(kept[by_kept], listed)
    first = {int(r): removed[by_kept[a : a + 5]] for r, a in zip(listed, starts)}
    ids, heads = _read_heads(dir, roots,
                             full={int(x) for r in listed for x in [r, *first[int(r)]]})
    for s in shards:
        lo, hi = np.searchsorted(removed, [s << 32, (s + 1) << 32])
        _write_json(dir / f"{s:05d}.remove.json", {
            str(int(x) & 0xFFFFFFFF): ["exact_duplicate" if e else "near_duplicate",
                                       ids[int(k)]]
            for x, k, e in zip(removed[lo:hi], kept[lo:hi], exact[lo:hi])})
    size_of = dict(zip(roots.tolist(), (sizes + 1).tolist()))
    tmp = dir / "clusters.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in listed.tolist():
            row = {"kept": heads[r], "size": size_of[r],
                   "removed": [heads[int(x)] for x in first[r]]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, dir / "clusters.jsonl")
    num_exact = int(exact.sum())
    reasons = {"exact_duplicate": num_exact, "near_duplicate": len(removed) - num_exact}
    return {"removed": {k: v for k, v in reasons.items() if v}, "clusters": len(roots)}


def _content_of(gids: np.ndarray, content: dict) -> np.ndarray:
    out = np.zeros(len(gids), dtype=np.uint64)
    for s, arr in content.items():
        mine = (gids >> 32) == s
        out[mine] = arr[gids[mine] & 0xFFFFFFFF]
    return out


def _read_heads(dir: Path, roots: np.ndarray, *,
                full: set[int]) -> tuple[dict[int, str], dict[int, dict]]:
    """The ``id`` of each of the sorted global ids ``roots`` and the whole ``docs.jsonl`` row of
    each of the ``full`` ones, streaming each shard's file once."""
    ids: dict[int, str] = {}
    heads: dict[int, dict] = {}
    for shard in sorted(set((roots >> 32).tolist()) | {x >> 32 for x in full}):
        lo, hi = np.searchsorted(roots, [shard << 32, (shard + 1) << 32])
        want, k = (roots[lo:hi] & 0xFFFFFFFF).tolist(), 0
        with open(dir / f"{shard:05d}.docs.jsonl", encoding="utf-8") as f:
            for i, line in enumerate(f):
                gid = _gid(shard, i)
                if gid in full:
                    heads[gid] = json.loads(line)
                if k < len(want) and want[k] == i:
                    ids[gid] = heads[gid]["id"] if gid in heads else json.loads(line)["id"]
                    k += 1
    return ids, heads


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
