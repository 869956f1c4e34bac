"""The typed config of `fullchain data`: one YAML file, one section per step.

``steps`` lists the steps to run, in order, by name; each name has its section below with its
thresholds. Steps before the dedup steps run per input shard, dedup runs over all shards, and
steps after dedup run per shard on what dedup kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fullchain.config import require

STEP_NAMES = ("normalize", "langid", "quality", "pii", "exact_dedup", "fuzzy_dedup",
              "decontaminate", "score")
DEDUP_STEPS = ("exact_dedup", "fuzzy_dedup")


@dataclass(kw_only=True)
class InputConfig:
    """What to read: files, folders (read recursively) or glob patterns."""

    paths: list[str] = field(default_factory=list)
    text_key: str = "text"   # the text field of JSONL/Parquet rows
    id_key: str = "id"       # the id field; a missing id becomes "<file>:<line>"
    shard_mb: float = 32.0   # input files are grouped into shards of about this many MB
    max_pdf_pages: int = 500

    def __post_init__(self) -> None:
        require(self.shard_mb > 0, "shard_mb", f"must be > 0, got {self.shard_mb}")


@dataclass(kw_only=True)
class NormalizeConfig:
    form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFKC"
    skip_sources: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class LangIdConfig:
    keep: list[str] = field(default_factory=lambda: ["en", "zh"])  # ISO 639-1 codes to keep
    min_score: float = 0.5    # confidence of the top language needed to keep a document
    max_chars: int = 2000     # detect on the first characters only
    skip_sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(0.0 <= self.min_score <= 1.0, "min_score",
                f"must be in [0, 1], got {self.min_score}")


@dataclass(kw_only=True)
class QualityConfig:
    """Gopher (Rae et al. 2021), C4 (Raffel et al. 2020) and FineWeb (Penedo et al. 2024) rules."""

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_ratio: float = 0.1            # '#' and '...' per word
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alpha_words: float = 0.8
    min_stop_words: int = 2
    max_dup_line_fraction: float = 0.3       # Gopher repetition
    max_dup_para_fraction: float = 0.3
    max_dup_line_chars: float = 0.2
    max_top_ngram_chars: dict[int, float] = field(
        default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    max_dup_ngram_chars: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    c4_line_filter: bool = True               # drop lines without terminal punctuation etc.
    c4_min_words_per_line: int = 3
    c4_drop_curly_brace: bool = False
    min_line_punct_ratio: float = 0.12        # FineWeb
    max_short_line_ratio: float = 0.67
    short_line_chars: int = 30
    skip_sources: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class PiiConfig:
    kinds: list[str] = field(default_factory=lambda: ["email", "phone", "ip", "id_number"])
    skip_sources: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class DedupConfig:
    """Exact dedup by normalised-content hash; fuzzy dedup by MinHash LSH (word shingles)."""

    shingle_words: int = 5
    bands: int = 16             # 16 x 6: candidates from Jaccard ~0.63 (recall 0.94 at
    rows: int = 6               # 0.7-0.8, 1.0 at >= 0.8); permutations = bands * rows
    threshold: float = 0.0      # > 0: verify each candidate pair's estimated Jaccard first
    seed: int = 1
    bucket_entries: int = 1_000_000  # band hashes held in memory at once by the cluster pass
    skip_sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(self.shingle_words >= 1, "shingle_words", "must be >= 1")
        require(self.bands >= 1 and self.rows >= 1, "bands", "bands and rows must be >= 1")
        require(0.0 <= self.threshold < 1.0, "threshold", "must be in [0, 1)")


@dataclass(kw_only=True)
class DecontaminateConfig:
    eval_paths: list[str] = field(default_factory=list)  # JSONL files or folders of them
    fields: list[str] = field(default_factory=lambda: ["question"])
    ngram: int = 13             # words (CJK characters count as words)
    min_tokens: int = 8         # eval items shorter than this are ignored
    skip_sources: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class ScoreConfig:
    """Perplexity under a fullchain checkpoint, stored as meta.perplexity."""

    model: str = ""
    max_tokens: int = 512
    max_perplexity: float = 0.0   # > 0: drop documents above it
    batch_size: int = 8           # documents per forward pass (right-padded)
    device: str = "cpu"
    skip_sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(kw_only=True)
class TokenizeConfig:
    enabled: bool = False
    tokenizer: str = ""         # a tokenizer folder; empty: train one on the cleaned documents
    vocab_size: int = 4096
    val_fraction: float = 0.02
    val_sources: list[str] | None = None  # hold out only documents of these meta.source values
    seed: int = 0


@dataclass(kw_only=True)
class PipelineConfig:
    input: InputConfig = field(default_factory=InputConfig)
    out: Path = Path("data_out")
    steps: list[str] = field(default_factory=lambda: [
        "normalize", "langid", "quality", "pii", "decontaminate", "exact_dedup", "fuzzy_dedup"])
    workers: int = 1
    executor: Literal["local", "ray"] = "local"
    ray_address: str = ""       # empty: start a local Ray instance
    output_format: Literal["jsonl.gz", "parquet"] = "jsonl.gz"
    progress: bool = True
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontaminate: DecontaminateConfig = field(default_factory=DecontaminateConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)

    def __post_init__(self) -> None:
        for name in self.steps:
            require(name in STEP_NAMES, "steps", f"has unknown step {name!r}; known: "
                    f"{', '.join(STEP_NAMES)}")
        require(len(set(self.steps)) == len(self.steps), "steps", "lists a step twice")
        require(self.workers >= 1, "workers", f"must be >= 1, got {self.workers}")
        dedup_at = [i for i, s in enumerate(self.steps) if s in DEDUP_STEPS]
        require(not dedup_at or dedup_at == list(range(dedup_at[0], dedup_at[-1] + 1)), "steps",
                "must list exact_dedup and fuzzy_dedup next to each other")
        if "score" in self.steps:
            require(bool(self.score.model), "score.model", "is needed by the score step: a "
                    "fullchain checkpoint folder")

    @property
    def pre_steps(self) -> list[str]:
        """Per-document steps before dedup (or all of them when there is no dedup)."""
        out = []
        for s in self.steps:
            if s in DEDUP_STEPS:
                break
            out.append(s)
        return out

    @property
    def dedup_steps(self) -> list[str]:
        return [s for s in self.steps if s in DEDUP_STEPS]

    @property
    def post_steps(self) -> list[str]:
        if not self.dedup_steps:
            return []
        last = max(self.steps.index(s) for s in self.dedup_steps)
        return self.steps[last + 1 :]
