"""Perplexity scoring under a fullchain checkpoint, and `fullchain data` on the command line."""

import gzip
import json
import math

from fullchain.cli import main
from fullchain.config import load_config
from fullchain.data.config import PipelineConfig
from fullchain.data.pipeline import run
from fullchain.data.writers import document_files, read_docs

from .conftest import english


def tiny_checkpoint(path, texts):
    from fullchain.checkpoint import save_model
    from fullchain.model import ModelConfig, Transformer
    from fullchain.tokenizer import train_bpe
    tok = train_bpe(iter(texts), vocab_size=300, special_tokens=["<|endoftext|>"],
                    bos_token=None, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    model = Transformer(ModelConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1,
                                    intermediate_size=64, max_position_embeddings=128))
    model.init_weights(seed=0)
    save_model(model, path)
    tok.save(path)


def test_perplexity_score_field_and_filter(tmp_path, rng):
    texts = [english(rng) for _ in range(6)]
    tiny_checkpoint(tmp_path / "model", texts)
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    base = {"input": {"paths": [str(tmp_path / "in.jsonl")]}, "progress": False,
            "steps": ["normalize", "exact_dedup", "score"],
            "score": {"model": str(tmp_path / "model"), "max_tokens": 64}}
    stats = run(load_config(PipelineConfig, data={**base, "out": str(tmp_path / "a")}))
    docs = [d for p in document_files(tmp_path / "a") for d in read_docs(p)]
    ppl = [d["meta"]["perplexity"] for d in docs]
    assert len(docs) == 6 and all(math.isfinite(p) and p > 1 for p in ppl)
    cut = sum(sorted(ppl)[2:4]) / 2
    base["score"]["max_perplexity"] = cut
    stats = run(load_config(PipelineConfig, data={**base, "out": str(tmp_path / "b")}))
    assert stats["documents_out"] == 3
    assert stats["steps"][-1]["dropped"] == {"perplexity_too_high": 3}


def test_cli_data_with_overrides(tmp_path, rng, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.md").write_text(english(rng), encoding="utf-8")
    (tmp_path / "in" / "b.md").write_text(english(rng), encoding="utf-8")
    (tmp_path / "p.yaml").write_text(f"input:\n  paths: [{tmp_path / 'in'}]\nprogress: false\n")
    assert main(["data", "--config", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "o"),
                 "--quality.min_words", "5", "--dedup.bands", "10"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["documents_out"] >= 1 and out["out"] == str(tmp_path / "o")
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert meta["lineage"]["config"]["dedup"]["bands"] == 10
    assert main(["data", "--config", str(tmp_path / "p.yaml"), "--dedup.bandz", "3"]) == 2
    assert "bandz" in capsys.readouterr().err


def _reference_perplexity(model, tok, text, max_tokens):
    """The one-document computation, written out: exp(mean cross-entropy), no padding."""
    import torch
    ids = tok.encode(text)[:max_tokens]
    if len(ids) < 2:
        return math.inf
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x)[0, :-1].float()
    return float(torch.exp(torch.nn.functional.cross_entropy(logits, x[0, 1:])))


def test_batched_perplexity_equals_one_at_a_time(tmp_path, rng):
    from fullchain.data.score import PerplexityScorer
    texts = [english(rng, rng.randint(1, 9)) for _ in range(11)] + ["", "a", "x" * 3000]
    tiny_checkpoint(tmp_path / "model", texts)
    scorer = PerplexityScorer(str(tmp_path / "model"), max_tokens=96)
    ref = [_reference_perplexity(scorer.model, scorer.tok, t, 96) for t in texts]
    assert math.isinf(ref[11]) and len({len(scorer.tok.encode(t)) for t in texts}) > 5
    for batch_size in (1, 3, 16):
        got = scorer.perplexities(texts, batch_size=batch_size)
        assert [math.isinf(p) for p in got] == [math.isinf(p) for p in ref]
        assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(got, ref) if math.isfinite(b))
    assert scorer.perplexity(texts[0]) == scorer.perplexities(texts[:1])[0]


def test_score_step_batches_keep_order_skips_and_drops(tmp_path, rng):
    texts = [english(rng, rng.randint(2, 9)) for _ in range(13)]
    tiny_checkpoint(tmp_path / "model", texts)
    rows = [{"id": str(i), "text": t, **({"meta": {"source": "world"}} if i % 5 == 0 else {})}
            for i, t in enumerate(texts)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = {"input": {"paths": [str(tmp_path / "in.jsonl")]}, "progress": False,
            "steps": ["normalize", "score"],  # no dedup: scoring runs in the clean phase
            "score": {"model": str(tmp_path / "model"), "max_tokens": 64,
                      "skip_sources": ["world"]}}
    probe = run(load_config(PipelineConfig, data={**base, "out": str(tmp_path / "probe")}))
    ppl = sorted(d["meta"]["perplexity"] for p in document_files(tmp_path / "probe")
                 for d in read_docs(p) if "perplexity" in d["meta"])
    assert probe["documents_out"] == 13 and len(ppl) == 10  # 3 world documents skipped
    base["score"]["max_perplexity"] = (ppl[4] + ppl[5]) / 2
    outs = {}
    for batch_size in (1, 4):
        base["score"]["batch_size"] = batch_size
        out = tmp_path / f"b{batch_size}"
        stats = run(load_config(PipelineConfig, data={**base, "out": str(out)}))
        assert stats["steps"][-1]["dropped"] == {"perplexity_too_high": 5}
        assert stats["steps"][-1]["docs_in"] == 13 and stats["steps"][-1]["docs_out"] == 8
        docs = [d for p in document_files(out) for d in read_docs(p)]
        dropped = [json.loads(line)["id"] for line in
                   gzip.open(out / "dropped.jsonl.gz", "rt").read().splitlines()]
        outs[batch_size] = (docs, dropped)
    (docs1, dropped1), (docs4, dropped4) = outs[1], outs[4]
    assert dropped1 == dropped4 == sorted(dropped1, key=int)
    assert [d["id"] for d in docs1] == [d["id"] for d in docs4]
    assert [d["id"] for d in docs1] == sorted((d["id"] for d in docs1), key=int)
    for a, b in zip(docs1, docs4):
        assert math.isclose(a["meta"].get("perplexity", 0), b["meta"].get("perplexity", 0),
                            rel_tol=1e-4, abs_tol=1e-3)
