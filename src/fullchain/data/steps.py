"""Per-document steps: each takes a document, may change its text or meta, and either keeps it
(returns None) or drops it (returns ``(reason, detail)``). Counts of what each step changed
(``modified``) are kept on the step and collected per shard by the runner.

The runner hands a step up to ``batch_docs`` documents at once (``apply_batch``); a step that
gains from batches (the model-based score) overrides ``process_batch``, the others process
one document at a time."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fullchain.data.config import PipelineConfig

Doc = dict[str, Any]
Drop = tuple[str, str]


class Step:
    """Base: ``apply`` skips documents whose meta.source is in ``skip_sources``."""

    name = "step"
    batch_docs = 1  # documents the step wants at once

    def __init__(self, skip_sources: list[str]) -> None:
        self.skip_sources = set(skip_sources)
        self.modified: Counter = Counter()

    def apply(self, doc: Doc) -> Drop | None:
        return self.apply_batch([doc])[0]

    def apply_batch(self, docs: list[Doc]) -> list[Drop | None]:
        """One result per document, in order; skipped sources are kept untouched."""
        results: list[Drop | None] = [None] * len(docs)
        todo = [i for i, d in enumerate(docs) if d["meta"].get("source") not in self.skip_sources]
        if todo:
            for i, result in zip(todo, self.process_batch([docs[i] for i in todo])):
                results[i] = result
        return results

    def process_batch(self, docs: list[Doc]) -> list[Drop | None]:
        return [self.process(doc) for doc in docs]

    def process(self, doc: Doc) -> Drop | None:  # pragma: no cover - abstract
        raise NotImplementedError


class Normalize(Step):
    name = "normalize"

    def __init__(self, cfg: PipelineConfig) -> None:
        super().__init__(cfg.normalize.skip_sources)
        self.form = cfg.normalize.form

    def process(self, doc: Doc) -> Drop | None:
        from fullchain.data.text import normalize_text
        text = normalize_text(doc["text"], form=self.form)
        if text != doc["text"]:
            self.modified["normalized"] += 1
            doc["text"] = text
        return None if text else ("empty_after_normalization", "")


class LangId(Step):
    name = "langid"

    def __init__(self, cfg: PipelineConfig) -> None:
        from fullchain.data.langid import identify
        super().__init__(cfg.langid.skip_sources)
        self.cfg = cfg.langid
        # lingua loads its models on first use (~2 s for the short-text ones): load them now,
        # with the step, so that the step's seconds measure documents, as for the other steps
        for sample in ("A short text.", "A museum opened in the spring. 博物馆在春天开放。"):
            identify(sample)

    def process(self, doc: Doc) -> Drop | None:
        from fullchain.data.langid import identify
        lang, score, mixed = identify(doc["text"], max_chars=self.cfg.max_chars)
        doc["meta"].update(lang=lang, lang_score=score)
        if mixed:
            doc["meta"]["lang_mix"] = mixed
        kept_share = sum(v for k, v in mixed.items() if k in self.cfg.keep) if len(mixed) > 1 \
            else (score if lang in self.cfg.keep else 0.0)
        if lang not in self.cfg.keep and kept_share < self.cfg.min_score:
            return (f"lang_{lang}", f"{lang} {score:.2f}")
        if kept_share < self.cfg.min_score:
            return ("lang_low_score", f"{lang} {score:.2f}")
        return None


class Quality(Step):
    name = "quality"

    def __init__(self, cfg: PipelineConfig) -> None:
        super().__init__(cfg.quality.skip_sources)
        self.cfg = cfg.quality

    def process(self, doc: Doc) -> Drop | None:
        from fullchain.data.quality import check_quality
        reason, text = check_quality(doc["text"], self.cfg)
        if reason:
            return (reason, "")
        if text != doc["text"]:
            self.modified["c4_lines_removed"] += 1
            doc["text"] = text
        return None


class Pii(Step):
    name = "pii"

    def __init__(self, cfg: PipelineConfig) -> None:
        super().__init__(cfg.pii.skip_sources)
        self.kinds = cfg.pii.kinds

    def process(self, doc: Doc) -> Drop | None:
        from fullchain.data.pii import REPLACEMENTS, redact
        text, counts = redact(doc["text"], self.kinds)
        if counts:
            doc["text"] = text
            doc["meta"]["pii"] = {k: {"count": n, "replacement": REPLACEMENTS[k]}
                                  for k, n in sorted(counts.items())}
            self.modified.update({f"pii_{k}": n for k, n in counts.items()})
            self.modified["pii_documents"] += 1
        return None


class Decontaminate(Step):
    name = "decontaminate"

    def __init__(self, cfg: PipelineConfig) -> None:
        from fullchain.data.decontam import load_eval_index
        c = cfg.decontaminate
        super().__init__(c.skip_sources)
        self.index = load_eval_index(c.eval_paths, c.fields, ngram=c.ngram,
                                     min_tokens=c.min_tokens)

    def process(self, doc: Doc) -> Drop | None:
        gram = self.index.find(doc["text"])
        return ("eval_ngram_overlap", gram) if gram else None


class Score(Step):
    name = "score"
    # the scorer sorts what it is handed by length before cutting it into batch_size batches:
    # a buffer of several batches keeps the padding small
    BUFFER_BATCHES = 8

    def __init__(self, cfg: PipelineConfig) -> None:
        from fullchain.data.score import PerplexityScorer
        super().__init__(cfg.score.skip_sources)
        self.cfg = cfg.score
        self.batch_docs = cfg.score.batch_size * self.BUFFER_BATCHES
        self.scorer = PerplexityScorer(cfg.score.model, max_tokens=cfg.score.max_tokens,
                                       device=cfg.score.device)

    def process_batch(self, docs: list[Doc]) -> list[Drop | None]:
        ppls = self.scorer.perplexities([d["text"] for d in docs], batch_size=self.cfg.batch_size)
        return [self._judge(doc, ppl) for doc, ppl in zip(docs, ppls)]

    def process(self, doc: Doc) -> Drop | None:
        return self.process_batch([doc])[0]

    def _judge(self, doc: Doc, ppl: float) -> Drop | None:
        doc["meta"]["perplexity"] = round(ppl, 3)
        if self.cfg.max_perplexity > 0 and ppl > self.cfg.max_perplexity:
            return ("perplexity_too_high", f"{ppl:.1f}")
        return None


STEPS = {"normalize": Normalize, "langid": LangId, "quality": Quality, "pii": Pii,
         "decontaminate": Decontaminate, "score": Score}


def build_steps(cfg: PipelineConfig, names: list[str]) -> list[Step]:
    """The step objects for ``names`` (per-document steps only), in order."""
    return [STEPS[name](cfg) for name in names]
