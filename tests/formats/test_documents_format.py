import gzip

import pytest

from fullchain.config import DataError
from fullchain.formats import read_documents, write_documents

DOCS = [
    {"id": "a", "text": "Hello world.", "meta": {"kind": "bio", "lang": "en"}},
    {"id": "b", "text": "你好，世界。\nsecond line", "meta": {}},
]


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.jsonl.gz"])
def test_round_trip(tmp_path, name):
    path = tmp_path / name
    assert write_documents(path, iter(DOCS)) == 2
    assert list(read_documents(path)) == DOCS
    assert not list(tmp_path.glob("*.tmp"))


def test_gzip_is_real_gzip_and_deterministic(tmp_path):
    write_documents(tmp_path / "a.jsonl.gz", DOCS)
    write_documents(tmp_path / "b.jsonl.gz", DOCS)
    raw = (tmp_path / "a.jsonl.gz").read_bytes()
    assert raw == (tmp_path / "b.jsonl.gz").read_bytes()
    assert gzip.decompress(raw).decode().count("\n") == 2


def test_missing_meta_defaults_and_utf8_kept(tmp_path):
    path = tmp_path / "d.jsonl"
    write_documents(path, [{"id": "x", "text": "é中"}])
    assert "é中" in path.read_text(encoding="utf-8")
    assert next(read_documents(path))["meta"] == {}


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "invalid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"id": 1, "text": "t"}', "'id' must be a string"),
        ('{"id": "x"}', "'text' must be a string"),
        ('{"id": "x", "text": "t", "meta": []}', "'meta' must be an object"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "ok", "text": "fine"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        list(read_documents(path))
    assert f"{path}:3:" in str(err.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        list(read_documents(tmp_path / "none.jsonl"))
    (tmp_path / "broken.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="broken.jsonl.gz: cannot read"):
        list(read_documents(tmp_path / "broken.jsonl.gz"))


def test_bad_document_on_write_leaves_no_file(tmp_path):
    path = tmp_path / "w.jsonl"
    with pytest.raises(DataError, match=r"document #1: 'text' must be a string"):
        write_documents(path, [DOCS[0], {"id": "z", "text": None}])
    assert not path.exists() and not list(tmp_path.iterdir())
