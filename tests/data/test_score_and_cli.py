"""Perplexity scoring under a fullchain checkpoint, and `fullchain data` on the command line."""

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
