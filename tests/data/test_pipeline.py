"""The pipeline end to end: funnel, rejects, resume after SIGKILL, token shards."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fullchain.config import DataError, load_config
from fullchain.data.config import PipelineConfig
from fullchain.data.pipeline import run
from fullchain.data.stats import without_timings
from fullchain.data.writers import document_files, read_docs
from fullchain.formats.tokens import TokenDataset

from .conftest import english


def make_inputs(root: Path, *, files: int = 6, per_file: int = 30) -> None:
    rng = random.Random(1)
    texts = []
    for f in range(files):
        rows = []
        for i in range(per_file):
            text = english(rng) if not texts or rng.random() > 0.2 else rng.choice(texts)
            texts.append(text)
            rows.append(json.dumps({"id": f"f{f}-{i}", "text": text}))
        if f == 0:
            rows += ["{not json", json.dumps({"id": "fr", "text": "Le chat dort sur la table de "
                     "la cuisine pendant que les enfants jouent dans le jardin."})]
        (root / "in").mkdir(parents=True, exist_ok=True)
        (root / "in" / f"part{f}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "in" / "empty.txt").write_bytes(b"")
    (root / "eval.jsonl").write_text(json.dumps({"question": texts[5][:120]}) + "\n")


def config(root: Path, out: str, **over) -> PipelineConfig:
    data = {"input": {"paths": [str(root / "in")], "shard_mb": 0.001}, "out": str(root / out),
            "progress": False, "quality": {"min_words": 20},
            "decontaminate": {"eval_paths": [str(root / "eval.jsonl")]}, **over}
    return load_config(PipelineConfig, data=data)


def test_pipeline_funnel_rejects_and_outputs(tmp_path):
    make_inputs(tmp_path)
    stats = run(config(tmp_path, "out"))
    steps = {s["step"]: s for s in stats["steps"]}
    assert stats["rejected"] == {"empty_file": 1, "invalid_json": 1}
    assert steps["langid"]["dropped"] == {"lang_fr": 1}
    assert steps["decontaminate"]["dropped"]["eval_ngram_overlap"] >= 1
    assert steps["exact_dedup"]["dropped"]["exact_duplicate"] >= 10
    out_docs = [d for p in document_files(tmp_path / "out") for d in read_docs(p)]
    assert len(out_docs) == stats["documents_out"] == steps["fuzzy_dedup"]["docs_out"]
    assert len({d["text"] for d in out_docs}) == len(out_docs)
    rejects = (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()
    assert any('"line":31' in r and "part0.jsonl" in r for r in rejects)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["format"] == "fullchain.data" and meta["num_documents"] == len(out_docs)


def test_per_step_seconds_in_markers_stats_and_table(tmp_path):
    from fullchain.data.stats import HEADER, funnel_rows
    make_inputs(tmp_path, files=3)
    stats = run(config(tmp_path, "out"))
    done = tmp_path / "out" / "done"
    markers = [json.loads(p.read_text()) for p in sorted(done.glob("clean-*.json"))]
    busy = [m for m in markers if m["read"]["docs_out"]]
    assert busy and all(m["read"]["seconds"] > 0 and m["dedup_index"]["seconds"] > 0 and
                        m["steps"]["normalize"]["seconds"] > 0 for m in busy)
    assert json.loads((done / "dedup.json").read_text())["seconds"] > 0
    steps = {s["step"]: s for s in stats["steps"]}
    parts = stats["dedup"]["seconds"]
    assert parts["index"] > 0 and parts["cluster"] > 0
    # both dedup steps share the two passes: their time is on the first one's row
    assert steps["exact_dedup"]["seconds"] > parts["index"] + parts["cluster"]
    assert steps["fuzzy_dedup"]["timed_with"] == "exact_dedup"
    assert "seconds" not in steps["fuzzy_dedup"]
    assert steps["langid"]["seconds"] == pytest.approx(
        sum(m["steps"]["langid"]["seconds"] for m in markers))
    rows = {r[0]: r for r in funnel_rows(stats)}
    rate = HEADER.index("docs/s")
    assert float(rows["langid"][rate].replace(",", "")) > 0
    assert rows["fuzzy_dedup"][rate] == "(above)"


def test_parquet_output_and_workers_match(tmp_path):
    make_inputs(tmp_path, files=4)
    a = run(config(tmp_path, "one"))
    b = run(config(tmp_path, "two", workers=2, output_format="parquet"))
    assert without_timings(a["steps"]) == without_timings(b["steps"])
    assert all(row["seconds"] > 0 for row in a["steps"] if "timed_with" not in row)
    docs_a = [d for p in document_files(tmp_path / "one") for d in read_docs(p)]
    docs_b = [d for p in document_files(tmp_path / "two") for d in read_docs(p)]
    assert docs_a == docs_b


def _tree(root: Path) -> dict[str, bytes]:
    keep = ("documents", "tokens", "rejects.jsonl", "dropped.jsonl.gz", "stats.json",
            "clusters.jsonl")
    tree = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and str(p.relative_to(root)).startswith(keep)}
    meta = json.loads(tree["tokens/meta.json"])  # lineage holds the time and the out path
    meta.pop("lineage")
    tree["tokens/meta.json"] = json.dumps(meta).encode()
    # timings (the `seconds` keys) are the one part of stats.json that a rerun cannot repeat
    tree["stats.json"] = json.dumps(without_timings(json.loads(tree["stats.json"]))).encode()
    return tree


@pytest.mark.slow
def test_sigkill_and_resume_is_byte_identical(tmp_path):
    make_inputs(tmp_path, files=12, per_file=40)
    tok = {"tokenize": {"enabled": True, "vocab_size": 300}}
    run(config(tmp_path, "ref", **tok))
    cfg_path = tmp_path / "run.yaml"
    import yaml
    cfg_path.write_text(yaml.safe_dump({
        "input": {"paths": [str(tmp_path / "in")], "shard_mb": 0.001}, "progress": False,
        "quality": {"min_words": 20}, "out": str(tmp_path / "killed"), **tok,
        "decontaminate": {"eval_paths": [str(tmp_path / "eval.jsonl")]}}))
    cmd = [sys.executable, "-m", "fullchain", "data", "--config", str(cfg_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "killed" / "done" / "clean-00003.json"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "stats.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ref, resumed = _tree(tmp_path / "ref"), _tree(tmp_path / "killed")
    assert ref.keys() == resumed.keys() and any(k.startswith("tokens/") for k in ref)
    assert [k for k in ref if ref[k] != resumed[k]] == []


def test_tokenize_step_boundaries_and_hash_refusal(tmp_path):
    from fullchain.data.tokenize import _is_val
    from fullchain.tokenizer import Tokenizer
    make_inputs(tmp_path, files=3)
    cfg = config(tmp_path, "out", workers=2, tokenize={"enabled": True, "vocab_size": 300,
                                                       "val_fraction": 0.1})
    stats = run(cfg)
    assert stats["tokens"]["num_documents"] == stats["documents_out"]
    assert stats["tokens"]["seconds"]["tokenize"] > 0
    assert not (tmp_path / "out" / "tokens" / "parts.tmp").exists()
    tok = Tokenizer.from_dir(tmp_path / "out" / "tokens" / "tokenizer")
    train = TokenDataset(tmp_path / "out" / "tokens", "train")
    train.validate()
    train.check_compatible(tok.content_hash(), tok.vocab_size)
    docs = [d for p in document_files(tmp_path / "out") for d in read_docs(p)]
    train_docs = [d for d in docs if not _is_val(d, 0.1, 0, None)]
    assert len(train) == len(train_docs)
    for i in (0, len(train) - 1):
        assert list(train.document(i)[:-1]) == tok.encode(train_docs[i]["text"])
        assert train.document(i)[-1] == tok.eos_token_id
    with pytest.raises(DataError, match="re-tokenize"):
        train.check_compatible("0" * 64, tok.vocab_size)
