"""MinHash signatures and LSH band hashes, vectorised over a batch of documents.

Shingles are ``shingle_words`` consecutive words (:func:`fullchain.data.text.words`), each word
hashed with CRC-32 and the window mixed into a 32-bit hash ``h``. Permutation ``k`` maps ``h`` to
``(a_k * h + b_k) mod 2**32`` (odd ``a_k``: a bijection), and the signature keeps the minimum per
permutation; 32-bit arithmetic keeps the batch arrays small and fast. A band is ``rows``
consecutive signature values hashed to 64 bits; two documents sharing any band hash are
duplicate candidates. Everything is seeded, so every worker and run computes the same values.
"""

from __future__ import annotations

import zlib

import numpy as np

from fullchain.data.text import words

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_PRIME = np.uint64(0x100000001B3)
_PERM_CHUNK = 16  # permutations computed at once: bounds the temporary array


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the output."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


class MinHasher:
    """Signatures of ``bands * rows`` permutations and their ``bands`` band hashes."""

    def __init__(self, *, shingle_words: int = 5, bands: int = 14, rows: int = 8,
                 seed: int = 1) -> None:
        self.shingle_words, self.bands, self.rows = shingle_words, bands, rows
        self.num_perm = bands * rows
        rng = np.random.Generator(np.random.PCG64(seed))
        self.a = rng.integers(0, 2**31, size=self.num_perm, dtype=np.uint32) * np.uint32(2) + \
            np.uint32(1)
        self.b = rng.integers(0, 2**32, size=self.num_perm, dtype=np.uint32)
        self._word_hash: dict[str, int] = {}

    def shingles(self, text: str) -> np.ndarray:
        """The document's shingle hashes (uint32; one shingle of all words when shorter)."""
        cache = self._word_hash
        if len(cache) > 2_000_000:
            cache.clear()  # bounded memory on huge vocabularies
        toks = words(text)
        for t in toks:
            if t not in cache:
                cache[t] = zlib.crc32(t.encode("utf-8"))
        h = np.array([cache[t] for t in toks], dtype=np.uint64)
        k = min(self.shingle_words, len(h))
        if k == 0:
            return h.astype(np.uint32)
        n = len(h) - k + 1
        with np.errstate(over="ignore"):
            acc = h[:n].copy()
            for j in range(1, k):
                acc = acc * _PRIME + h[j : j + n]
            return (_mix(acc) >> np.uint64(32)).astype(np.uint32)

    def signatures(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(signatures uint32 [docs, num_perm], has_shingles bool [docs]) for a batch."""
        parts = [self.shingles(t) for t in texts]
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        sig = np.full((len(texts), self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        has = sizes > 0
        if not has.any():
            return sig, has
        flat = np.concatenate([p for p in parts if len(p)])
        starts = np.concatenate([[0], np.cumsum(sizes[has])[:-1]])
        with np.errstate(over="ignore"):
            for c in range(0, self.num_perm, _PERM_CHUNK):
                a = self.a[c : c + _PERM_CHUNK, None]
                b = self.b[c : c + _PERM_CHUNK, None]
                vals = flat[None, :] * a + b
                sig[has, c : c + _PERM_CHUNK] = np.minimum.reduceat(vals, starts, axis=1).T
        return sig, has

    def band_hashes(self, sig: np.ndarray) -> np.ndarray:
        """uint64 [docs, bands]: each band's ``rows`` values hashed together."""
        s = sig.astype(np.uint64).reshape(len(sig), self.bands, self.rows)
        with np.errstate(over="ignore"):
            acc = np.zeros(s.shape[:2], dtype=np.uint64) + np.arange(self.bands, dtype=np.uint64)
            for r in range(self.rows):
                acc = _mix(acc * _PRIME + s[:, :, r])
        return acc


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """The share of permutations on which two signatures agree."""
    return float(np.mean(sig_a == sig_b))
