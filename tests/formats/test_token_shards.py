import numpy as np
import pytest

from fullchain.config import DataError
from fullchain.formats import (
    TokenDataset,
    TokenShardWriter,
    make_lineage,
    read_meta,
    write_token_dataset,
    write_token_meta,
)

EOS = 0
VOCAB = 100


def _write(path, splits=None):
    splits = splits or {"train": [[5, 6, 7], [8], []], "val": [[9, 10]]}
    lineage = make_lineage(stage="test", inputs=[], config={}, seed=0)
    return write_token_dataset(
        path, splits, tokenizer_hash="tok-a", vocab_size=VOCAB, eos_token_id=EOS, lineage=lineage
    )


def test_round_trip_and_layout(tmp_path):
    meta = _write(tmp_path)
    assert meta["format"] == "fullchain.tokens" and meta["dtype"] == "uint32"
    assert meta["num_tokens"] == 10 and meta["num_documents"] == 4
    assert [s["name"] for s in meta["shards"]] == ["train", "val"]
    # the raw files are the documented little-endian layout, EOS appended per document
    raw = np.fromfile(tmp_path / "train.bin", dtype="<u4")
    assert raw.tolist() == [5, 6, 7, EOS, 8, EOS, EOS]
    assert np.fromfile(tmp_path / "train.idx", dtype="<u8").tolist() == [4, 6, 7]
    ds = TokenDataset(tmp_path, "train")
    assert ds.num_tokens == 7 and ds.num_documents == 3 == len(ds)
    assert ds.tokens.dtype == np.uint32 and ds.doc_ends.dtype == np.uint64
    assert ds.document(0).tolist() == [5, 6, 7, EOS]
    assert ds.document(2).tolist() == [EOS]
    ds.validate()
    ds.check_compatible("tok-a", VOCAB)
    assert TokenDataset(tmp_path, "val").document(0).tolist() == [9, 10, EOS]
    with pytest.raises(IndexError):
        ds.document(3)
    assert not list(tmp_path.glob("*.tmp"))


def test_writer_streams_and_accepts_numpy(tmp_path):
    with TokenShardWriter(
        tmp_path, "train", tokenizer_hash="h", vocab_size=VOCAB, eos_token_id=EOS
    ) as w:
        w.add_document(np.array([1, 2], dtype=np.uint32))
        w.add_document(iter([3]))
    shard = w.close()
    assert shard == {"name": "train", "num_tokens": 5, "num_documents": 2}
    write_token_meta(
        tmp_path, [shard], tokenizer_hash="h", vocab_size=VOCAB, eos_token_id=EOS, lineage={}
    )
    assert read_meta(tmp_path, format="fullchain.tokens", max_version=1)["num_tokens"] == 5
    assert TokenDataset(tmp_path).tokens.tolist() == [1, 2, EOS, 3, EOS]


def test_writer_rejects_out_of_vocab_id_and_leaves_nothing(tmp_path):
    with pytest.raises(DataError, match="train.bin: document #0 has token id 100"):
        with TokenShardWriter(
            tmp_path, "train", tokenizer_hash="h", vocab_size=VOCAB, eos_token_id=EOS
        ) as w:
            w.add_document([1, 100])
    assert not list(tmp_path.iterdir())


def test_empty_shard(tmp_path):
    _write(tmp_path, {"train": []})
    ds = TokenDataset(tmp_path)
    assert ds.num_tokens == 0 and ds.num_documents == 0
    ds.validate()


def test_tokenizer_mismatch_names_directory(tmp_path):
    _write(tmp_path)
    ds = TokenDataset(tmp_path)
    with pytest.raises(DataError, match="re-tokenize") as err:
        ds.check_compatible("tok-b", VOCAB)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(DataError, match="vocab_size 100 exceeds the model's 50"):
        ds.check_compatible("tok-a", 50)


def test_token_id_over_vocab_found_by_validate(tmp_path):
    _write(tmp_path)
    tokens = np.memmap(tmp_path / "train.bin", dtype="<u4", mode="r+")
    tokens[1] = 250
    tokens.flush()
    del tokens
    with pytest.raises(DataError, match="token id 250 at position 1") as err:
        TokenDataset(tmp_path).validate()
    assert str(tmp_path / "train.bin") in str(err.value)


def test_missing_eos_found_by_validate(tmp_path):
    _write(tmp_path)
    tokens = np.memmap(tmp_path / "train.bin", dtype="<u4", mode="r+")
    tokens[3] = 42
    tokens.flush()
    del tokens
    with pytest.raises(DataError, match="document 0 does not end with eos"):
        TokenDataset(tmp_path).validate()


def test_truncated_bin(tmp_path):
    _write(tmp_path)
    path = tmp_path / "train.bin"
    data = path.read_bytes()
    path.write_bytes(data[:-2])
    with pytest.raises(DataError, match="not a multiple of 4") as err:
        TokenDataset(tmp_path)
    assert str(path) in str(err.value)
    path.write_bytes(data[:-4])
    with pytest.raises(DataError, match="truncated") as err:
        TokenDataset(tmp_path)
    assert str(path) in str(err.value)


def test_bad_index_and_missing_files(tmp_path):
    _write(tmp_path)
    (tmp_path / "train.idx").write_bytes(b"\x00" * 7)
    with pytest.raises(DataError, match="train.idx: 7 bytes"):
        TokenDataset(tmp_path)
    (tmp_path / "val.bin").unlink()
    with pytest.raises(DataError, match="val.bin: missing"):
        TokenDataset(tmp_path, "val")
    with pytest.raises(DataError, match="no shard 'test'"):
        TokenDataset(tmp_path, "test")
    with pytest.raises(DataError, match="meta.json: not found"):
        TokenDataset(tmp_path / "elsewhere")
