"""Text helpers shared by the cleaning steps: words (CJK characters count as words), lines,
paragraphs, n-grams, a stable 64-bit hash, and the normalisation used for exact dedup."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

# a CJK ideograph (or kana/hangul) is one word; otherwise a run of letters/digits is one word
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
_BLANKS = re.compile(r"\n{3,}")
_PUNCT_SPACE = re.compile(r"[\W_]+")
# zero-width and bidi controls that break matching but carry no text
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u202a\u202b\u202c\u202d\u202e"))


def words(text: str) -> list[str]:
    """Lower-cased words: CJK characters one by one, other scripts by letter/digit runs."""
    return _WORD.findall(text.lower())


def raw_words(text: str) -> list[str]:
    """Whitespace-separated tokens as written (for Gopher's word-length and symbol ratios)."""
    return text.split()


def cjk_ratio(text: str) -> float:
    """Fraction of non-space characters that are CJK."""
    chars = sum(1 for c in text if not c.isspace())
    return len(_CJK.findall(text)) / chars if chars else 0.0


def lines(text: str) -> list[str]:
    """Non-blank lines, stripped."""
    return [line.strip() for line in text.split("\n") if line.strip()]


def paragraphs(text: str) -> list[str]:
    """Blocks separated by blank lines, stripped, non-empty."""
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous n-grams of ``tokens`` (none when fewer than ``n``)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def normalize_text(text: str, *, form: str = "NFKC") -> str:
    """Unicode ``form`` normalisation, invisible controls removed, runs of spaces/tabs to one
    space, lines stripped, at most one blank line in a row, no leading/trailing blank lines."""
    text = unicodedata.normalize(form, text).translate(_INVISIBLE)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()


# ASCII to content_key's form: letters and digits lower-cased, everything else a space
_ASCII_KEY = "".join(chr(c).lower() if chr(c).isalnum() else " " for c in range(128))


def content_key(text: str) -> str:
    """The normalised content exact dedup compares: NFKC, lower case, punctuation and
    whitespace collapsed to single spaces."""
    if text.isascii():  # the same result without the regular expression (most web text)
        return " ".join(text.translate(_ASCII_KEY).split())
    text = unicodedata.normalize("NFKC", text).lower()
    return _PUNCT_SPACE.sub(" ", text).strip()


def hash64(data: str | bytes) -> int:
    """A stable unsigned 64-bit hash (blake2b), the same in every process and run."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")


def count_bytes(docs: Iterable[dict]) -> int:
    """UTF-8 bytes of the docs' text."""
    return sum(len(d["text"].encode("utf-8")) for d in docs)
