"""Language identification with lingua (its models ship inside the wheel: no downloads).

``identify(text)`` returns the top language (ISO 639-1), its confidence, and for text that mixes
CJK with Latin script the share of characters per detected language.
"""

from __future__ import annotations

import re
from functools import lru_cache

# the languages told apart; a document in one of them but not in `keep` is dropped as such
CANDIDATES = ("en", "zh", "ja", "ko", "fr", "de", "es", "pt", "it", "nl", "ru", "ar", "hi", "vi")
_CJK = re.compile(r"[\u3400-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")


@lru_cache(maxsize=2)
def _detector(low_accuracy: bool = True):
    try:
        from lingua import IsoCode639_1, LanguageDetectorBuilder
    except ImportError as e:  # pragma: no cover - depends on the install
        from fullchain.config import DataError
        raise DataError("the langid step needs lingua: pip install 'fullchain[data]'") from e
    codes = [getattr(IsoCode639_1, c.upper()) for c in CANDIDATES]
    builder = LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    return builder.build()


def identify(text: str, *, max_chars: int = 2000) -> tuple[str, float, dict[str, float]]:
    """(top language code or "unknown", its confidence in [0, 1], {code: share} when mixed)."""
    sample = text[:max_chars]
    # low accuracy mode is reliable from ~120 characters; short texts get the full models
    detector = _detector(len(sample) >= 120)
    values = detector.compute_language_confidence_values(sample)
    if not values or values[0].value <= 0.0:
        return "unknown", 0.0, {}
    top = values[0]
    lang = top.language.iso_code_639_1.name.lower()
    mixed: dict[str, float] = {}
    if _CJK.search(sample) and _LATIN.search(sample):
        spans: dict[str, int] = {}
        for seg in _detector(False).detect_multiple_languages_of(sample):
            code = seg.language.iso_code_639_1.name.lower()
            spans[code] = spans.get(code, 0) + seg.end_index - seg.start_index
        total = sum(spans.values()) or 1
        mixed = {k: round(v / total, 3) for k, v in sorted(spans.items())}
        if len(mixed) > 1:
            lang = max(mixed, key=lambda k: mixed[k])
            return lang, mixed[lang], mixed
    return lang, round(float(top.value), 4), mixed
