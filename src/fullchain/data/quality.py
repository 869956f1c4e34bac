"""Heuristic quality filters: Gopher quality and repetition (Rae et al. 2021, appendix A),
C4 line rules (Raffel et al. 2020) and FineWeb's line rules (Penedo et al. 2024).

Each check returns a drop reason (a short snake_case name) or None. Word-based Gopher checks
that only make sense for space-separated scripts (mean word length, stop words, alphabetic words)
are skipped for mostly-CJK text, whose length is counted in characters instead.
"""

from __future__ import annotations

import re
from collections import Counter

from fullchain.data.config import QualityConfig
from fullchain.data.text import cjk_ratio, lines, ngrams, paragraphs, raw_words, words

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with", "is", "in", "a",
                        "it", "for", "on", "was", "as", "are", "this", "by", "from"})
BULLETS = ("•", "●", "○", "▪", "■", "-", "*", "‣", "⁃", "·")
TERMINAL = (".", "!", "?", '"', "'", "。", "！", "？", "”", "’", ":", ";", "…", "）", ")")
_C4_BAD_LINE = re.compile(r"javascript|terms of use|privacy policy|cookie policy|uses cookies",
                          re.IGNORECASE)
_ALPHA = re.compile(r"[^\W\d_]")


def check_quality(text: str, cfg: QualityConfig) -> tuple[str | None, str]:
    """Apply the C4 line rules, then the document checks. Returns (drop reason or None, the
    text to keep — C4 may have removed lines)."""
    if cfg.c4_line_filter:
        text, reason = c4_lines(text, cfg)
        if reason:
            return reason, text
    cjk = cjk_ratio(text) > 0.3
    for check in (_gopher_quality, _gopher_repetition, _fineweb):
        reason = check(text, cfg, cjk)
        if reason:
            return reason, text
    return None, text


def c4_lines(text: str, cfg: QualityConfig) -> tuple[str, str | None]:
    """C4: drop lines that do not end in terminal punctuation, have too few words, or mention
    javascript/cookie/terms boilerplate; drop the document for lorem ipsum (and curly braces when
    configured)."""
    low = text.lower()
    if "lorem ipsum" in low:
        return text, "c4_lorem_ipsum"
    if cfg.c4_drop_curly_brace and "{" in text:
        return text, "c4_curly_brace"
    kept = []
    for line in text.split("\n"):
        s = line.strip()
        if not s:
            kept.append("")
            continue
        cjk_line = cjk_ratio(s) > 0.3
        too_short = not cjk_line and len(s.split()) < cfg.c4_min_words_per_line
        if s.endswith(TERMINAL) and not too_short and not _C4_BAD_LINE.search(s):
            kept.append(line)
    out = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    return out, None if out else "c4_no_good_lines"


def _gopher_quality(text: str, cfg: QualityConfig, cjk: bool) -> str | None:
    toks = words(text)
    n = len(toks)
    if n < cfg.min_words:
        return "gopher_too_few_words"
    if n > cfg.max_words:
        return "gopher_too_many_words"
    raw = raw_words(text)
    if (text.count("#") + text.count("...") + text.count("…")) / max(1, len(raw)) > \
            cfg.max_symbol_ratio:
        return "gopher_symbol_ratio"
    ls = lines(text)
    if ls and sum(line.startswith(BULLETS) for line in ls) / len(ls) > cfg.max_bullet_lines:
        return "gopher_bullet_lines"
    if ls and sum(line.endswith(("...", "…")) for line in ls) / len(ls) > cfg.max_ellipsis_lines:
        return "gopher_ellipsis_lines"
    if cjk:
        return None
    mean = sum(len(w) for w in raw) / max(1, len(raw))
    if not cfg.min_mean_word_length <= mean <= cfg.max_mean_word_length:
        return "gopher_mean_word_length"
    if sum(bool(_ALPHA.search(w)) for w in raw) / max(1, len(raw)) < cfg.min_alpha_words:
        return "gopher_alpha_words"
    if sum(w in STOP_WORDS for w in toks) < cfg.min_stop_words:
        return "gopher_stop_words"
    return None


def _dup_fractions(items: list[str]) -> tuple[float, float]:
    """(fraction of items that repeat an earlier one, fraction of characters in them)."""
    seen: set[str] = set()
    dup_n = dup_chars = 0
    for item in items:
        if item in seen:
            dup_n += 1
            dup_chars += len(item)
        seen.add(item)
    total_chars = sum(len(i) for i in items)
    return dup_n / max(1, len(items)), dup_chars / max(1, total_chars)


def _gopher_repetition(text: str, cfg: QualityConfig, cjk: bool) -> str | None:
    line_frac, line_chars = _dup_fractions(lines(text))
    if line_frac > cfg.max_dup_line_fraction:
        return "gopher_dup_lines"
    if line_chars > cfg.max_dup_line_chars:
        return "gopher_dup_line_chars"
    para_frac, _ = _dup_fractions(paragraphs(text))
    if para_frac > cfg.max_dup_para_fraction:
        return "gopher_dup_paragraphs"
    toks = words(text)
    total = sum(len(t) for t in toks) or 1
    for n, limit in sorted(cfg.max_top_ngram_chars.items()):
        grams = Counter(ngrams(toks, n))
        if grams:
            gram, count = grams.most_common(1)[0]
            if count > 1 and sum(len(t) for t in gram) * count / total > limit:
                return f"gopher_top_{n}gram"
    for n, limit in sorted(cfg.max_dup_ngram_chars.items()):
        if _dup_ngram_chars(toks, n) / total > limit:
            return f"gopher_dup_{n}gram"
    return None


def _dup_ngram_chars(toks: list[str], n: int) -> int:
    """Characters of the words covered by n-grams that occur more than once (each word once)."""
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(toks)
    for i, gram in enumerate(ngrams(toks, n)):
        if gram in seen:
            covered[i : i + n] = [True] * n
        seen.add(gram)
    return sum(len(t) for t, c in zip(toks, covered) if c)


def _fineweb(text: str, cfg: QualityConfig, cjk: bool) -> str | None:
    ls = lines(text)
    if not ls:
        return "fineweb_empty"
    if sum(line.endswith(TERMINAL) for line in ls) / len(ls) < cfg.min_line_punct_ratio:
        return "fineweb_line_punct_ratio"
    if not cjk and sum(len(line) <= cfg.short_line_chars for line in ls) / len(ls) > \
            cfg.max_short_line_ratio:
        return "fineweb_short_lines"
    return None
