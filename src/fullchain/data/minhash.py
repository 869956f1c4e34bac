"""MinHash signatures and LSH band hashes, vectorised over a batch of documents.

Words are those of :func:`fullchain.data.text.words` (lower case; CJK characters one by one,
other scripts letter/digit runs). A batch's words are laid out in one byte array and each word
is hashed by a 64-bit polynomial computed from prefix sums, so no Python runs per word; ASCII
documents (most web text) skip the regular expression too, with the same words as a result.
A shingle is ``shingle_words`` consecutive words of one document (one shingle of all words when
shorter) mixed into a 32-bit hash ``h``. Permutation ``k`` maps ``h`` to ``(a_k * h + b_k) mod
2**32`` (odd ``a_k``: a bijection), and the signature keeps the minimum per permutation. A band
is ``rows`` consecutive signature values hashed to 64 bits; two documents sharing any band hash
are duplicate candidates. Everything is seeded, so every worker and run computes the same values.
"""

from __future__ import annotations

import numpy as np

from fullchain.data.text import words

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_PRIME = np.uint64(0x100000001B3)
_BYTE_P = 0x9E3779B97F4A7C15 | 1               # odd: invertible modulo 2**64
_BYTE_P_INV = pow(_BYTE_P, -1, 2**64)
_SPACE = 0x20
# ASCII bytes to what ``words`` keeps: letters lower-cased, digits kept, the rest a separator
_ASCII_WORDS = bytes(b | 0x20 if 65 <= b <= 90 else b if (97 <= b <= 122 or 48 <= b <= 57)
                     else _SPACE for b in range(128)) + bytes(range(128, 256))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the output."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


_POWERS: dict[int, np.ndarray] = {}


def _powers(base: int, n: int) -> np.ndarray:
    """``base**i mod 2**64`` for i in [0, n) (numpy's unsigned products wrap), cached and
    grown by doubling: computing them is the costliest part of a batch otherwise."""
    have = _POWERS.get(base)
    if have is None or len(have) < n:
        size = max(n, 2 * len(have) if have is not None else 1 << 16)
        have = np.full(size, base, dtype=np.uint64)
        have[0] = 1
        have = _POWERS[base] = np.cumprod(have, dtype=np.uint64)
    return have[:n]


def _word_bytes(text: str) -> bytes:
    """The document's words, lower case, separated by single spaces (as bytes)."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_WORDS)
    return " ".join(words(text)).encode("utf-8")


def word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of every word of the batch in order, words per document)."""
    parts = [_word_bytes(t) for t in texts]
    buf = np.frombuffer(b" " + b"  ".join(parts) + b" ", dtype=np.uint8)
    doc_start = np.cumsum([1] + [len(p) + 2 for p in parts[:-1]]) if parts else np.zeros(0)
    is_word = buf != _SPACE
    edges = np.flatnonzero(is_word[1:] != is_word[:-1]) + 1  # the buffer starts and ends blank
    starts, ends = edges[0::2], edges[1::2]
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(buf) + 1, dtype=np.uint64)
        np.cumsum(buf.astype(np.uint64) * _powers(_BYTE_P_INV, len(buf)), out=prefix[1:])
        h = (prefix[ends] - prefix[starts]) * _powers(_BYTE_P, len(buf))[ends - 1]
    counts = np.diff(np.searchsorted(starts, np.append(doc_start, len(buf))))
    return _mix(h), counts


def shingle_hashes(word_hash: np.ndarray, counts: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint32 shingle hashes of the batch, grouped by document; shingles per document) from
    :func:`word_hashes`."""
    doc = np.repeat(np.arange(len(counts)), counts)
    n = max(len(word_hash) - k + 1, 0)
    with np.errstate(over="ignore"):
        acc = word_hash[:n].copy()
        for j in range(1, k):
            acc = acc * _PRIME + word_hash[j : j + n]
        within = doc[:n] == doc[k - 1 :]  # the window does not cross into the next document
        acc, shingle_doc = acc[within], doc[:n][within]
        short = np.flatnonzero((counts < k) & (counts > 0))
        if len(short):  # a document shorter than a shingle is one shingle of all its words
            first = np.cumsum(counts) - counts
            extra = []
            for d in short:
                a = word_hash[first[d]]
                for x in word_hash[first[d] + 1 : first[d] + counts[d]]:
                    a = a * _PRIME + x
                extra.append(a)
            acc = np.concatenate([acc, np.array(extra, dtype=np.uint64)])
            shingle_doc = np.concatenate([shingle_doc, short])
            order = np.argsort(shingle_doc, kind="stable")
            acc, shingle_doc = acc[order], shingle_doc[order]
    hashes = (_mix(acc) >> np.uint64(32)).astype(np.uint32)
    return hashes, np.bincount(shingle_doc, minlength=len(counts))


class MinHasher:
    """Signatures of ``bands * rows`` permutations and their ``bands`` band hashes."""

    def __init__(self, *, shingle_words: int = 5, bands: int = 16, rows: int = 6,
                 seed: int = 1) -> None:
        self.shingle_words, self.bands, self.rows = shingle_words, bands, rows
        self.num_perm = bands * rows
        rng = np.random.Generator(np.random.PCG64(seed))
        self.a = rng.integers(0, 2**31, size=self.num_perm, dtype=np.uint32) * np.uint32(2) + \
            np.uint32(1)
        self.b = rng.integers(0, 2**32, size=self.num_perm, dtype=np.uint32)

    def signatures(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(signatures uint32 [docs, num_perm], has_shingles bool [docs]) for a batch."""
        flat, sizes = shingle_hashes(*word_hashes(texts), self.shingle_words)
        sig = np.full((len(texts), self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        has = sizes > 0
        if not has.any():
            return sig, has
        starts = np.concatenate([[0], np.cumsum(sizes[has])[:-1]])
        vals = np.empty_like(flat)
        rows = np.flatnonzero(has)
        with np.errstate(over="ignore"):
            for k in range(self.num_perm):  # one permutation at a time: stays in cache
                np.multiply(flat, self.a[k], out=vals)
                np.add(vals, self.b[k], out=vals)
                sig[rows, k] = np.minimum.reduceat(vals, starts)
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
