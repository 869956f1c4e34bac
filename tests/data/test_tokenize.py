"""Tokenization into token shards: worker processes over the document files give the same bytes
as one process, and the ids are the tokenizer's own."""

import json

from fullchain.data.tokenize import _is_val, tokenize_documents, train_tokenizer
from fullchain.data.writers import write_docs
from fullchain.formats.tokens import TokenDataset

from .conftest import english


def _files(root, rng, *, files=5, per_file=40):
    paths = []
    for f in range(files):
        docs = [{"id": f"f{f}-{i}", "text": english(rng, rng.randint(1, 6)) + " 你好，世界。",
                 "meta": {}} for i in range(per_file if f != 2 else 0)]  # one empty file
        write_docs(root / f"part-{f:05d}", docs, fmt="jsonl.gz")
        paths.append(root / f"part-{f:05d}.jsonl.gz")
    return paths


def test_workers_give_byte_identical_shards(tmp_path, rng):
    paths = _files(tmp_path, rng)
    tok = train_tokenizer(paths, tmp_path / "tok", vocab_size=400)
    metas = {}
    for workers in (1, 2):
        metas[workers] = tokenize_documents(paths, tmp_path / "tok", tmp_path / f"w{workers}",
                                            val_fraction=0.2, workers=workers)
    names = sorted(p.name for p in (tmp_path / "w1").iterdir())
    assert names == ["meta.json", "tokenizer", "train.bin", "train.idx", "val.bin", "val.idx"]
    assert names == sorted(p.name for p in (tmp_path / "w2").iterdir())
    for name in names[2:]:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
    for meta in metas.values():  # only the creation time may differ
        meta["lineage"].pop("created_utc")
    assert metas[1] == metas[2] and metas[1]["num_documents"] == 160
    on_disk = json.loads((tmp_path / "w2" / "meta.json").read_text())
    assert on_disk["num_tokens"] == metas[2]["num_tokens"]
    docs = [json.loads(line) for p in paths for line in _lines(p)]
    train = TokenDataset(tmp_path / "w2", "train")
    train.validate()
    train_docs = [d for d in docs if not _is_val(d, 0.2, 0, None)]
    assert len(train) == len(train_docs) and 0 < len(train) < 160
    for i, doc in enumerate(train_docs):
        assert list(train.document(i)[:-1]) == tok.encode(doc["text"])


def test_val_sources_hold_out_only_those_sources(tmp_path, rng):
    docs = [{"id": f"d{i}", "text": english(rng, 2),
             "meta": {"source": "world" if i % 2 else "web"}} for i in range(200)]
    write_docs(tmp_path / "part-00000", docs, fmt="jsonl.gz")
    paths = [tmp_path / "part-00000.jsonl.gz"]
    tok = train_tokenizer(paths, tmp_path / "tok", vocab_size=300)
    tokenize_documents(paths, tmp_path / "tok", tmp_path / "out", val_fraction=0.3,
                       val_sources=["world"])
    val = TokenDataset(tmp_path / "out", "val")
    held_out = [d for d in docs if d["meta"]["source"] == "world" and _is_val(d, 0.3, 0, None)]
    assert len(val) == len(held_out) > 10
    for i, doc in enumerate(held_out):  # every held-out document is a world one, in order
        assert list(val.document(i)[:-1]) == tok.encode(doc["text"])
    assert len(TokenDataset(tmp_path / "out", "train")) == 200 - len(held_out)


def _lines(path):
    import gzip
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()
