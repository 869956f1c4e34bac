import json

import pytest

from fullchain import __version__
from fullchain.config import DataError
from fullchain.formats import hash_path, make_lineage, read_meta, write_meta


def test_hash_file_is_sha256_and_changes_with_content(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello")
    assert hash_path(f) == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    f.write_bytes(b"hello!")
    assert hash_path(f) != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


def test_hash_dir_stable_and_sensitive(tmp_path):
    for name in ("x", "y"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "a.bin").write_bytes(b"1")
        (tmp_path / name / "sub" / "b.bin").write_bytes(b"2")
    assert hash_path(tmp_path / "x") == hash_path(tmp_path / "y")
    (tmp_path / "y" / "sub" / "b.bin").write_bytes(b"3")
    assert hash_path(tmp_path / "x") != hash_path(tmp_path / "y")
    (tmp_path / "y" / "sub" / "b.bin").write_bytes(b"2")
    (tmp_path / "y" / "sub" / "b.bin").rename(tmp_path / "y" / "sub" / "c.bin")
    assert hash_path(tmp_path / "x") != hash_path(tmp_path / "y")


def test_hash_dir_ignores_meta_lineage_but_not_meta_fields(tmp_path):
    def run(d, config, counts):
        (d / "data.txt").parent.mkdir(parents=True, exist_ok=True)
        (d / "data.txt").write_text("same")
        lineage = make_lineage(stage="s", inputs=[], config=config, seed=0)
        write_meta(d, format="f", version=1, lineage=lineage, counts=counts)

    run(tmp_path / "a", {"x": 1}, 1)
    run(tmp_path / "b", {"x": 2}, 1)
    run(tmp_path / "c", {"x": 1}, 2)
    assert hash_path(tmp_path / "a") == hash_path(tmp_path / "b")
    assert hash_path(tmp_path / "a") != hash_path(tmp_path / "c")


def test_hash_missing_path(tmp_path):
    with pytest.raises(DataError, match="nope"):
        hash_path(tmp_path / "nope")


def test_make_lineage_records_inputs(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("data")
    lineage = make_lineage(stage="data", inputs=[f], config={"k": 1}, seed=3)
    assert lineage["stage"] == "data"
    assert lineage["fullchain_version"] == __version__
    assert lineage["seed"] == 3 and lineage["config"] == {"k": 1}
    assert lineage["inputs"] == [{"path": str(f), "sha256": hash_path(f)}]
    assert lineage["created_utc"].endswith("Z")


def test_meta_round_trip(tmp_path):
    lineage = make_lineage(stage="s", inputs=[], config={}, seed=None)
    path = write_meta(tmp_path / "out", format="fullchain.x", version=2, lineage=lineage, n=5)
    assert path.name == "meta.json" and not list((tmp_path / "out").glob("*.tmp"))
    meta = read_meta(tmp_path / "out", format="fullchain.x", max_version=2)
    assert meta["n"] == 5 and meta["version"] == 2 and meta["lineage"] == lineage


def test_read_meta_errors(tmp_path):
    with pytest.raises(DataError, match="meta.json: not found"):
        read_meta(tmp_path, format="fullchain.x", max_version=1)
    write_meta(tmp_path, format="fullchain.y", version=1, lineage={})
    with pytest.raises(DataError, match="meta.json: format is 'fullchain.y'"):
        read_meta(tmp_path, format="fullchain.x", max_version=1)
    write_meta(tmp_path, format="fullchain.x", version=3, lineage={})
    with pytest.raises(DataError, match="version 3 is newer.*upgrade"):
        read_meta(tmp_path, format="fullchain.x", max_version=1)
    (tmp_path / "meta.json").write_text("{oops")
    with pytest.raises(DataError, match="not valid JSON"):
        read_meta(tmp_path, format="fullchain.x", max_version=1)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "fullchain.x", "version": "1"}))
    with pytest.raises(DataError, match="'version' must be an integer"):
        read_meta(tmp_path, format="fullchain.x", max_version=1)
