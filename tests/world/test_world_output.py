import json
import re

import pytest

from fullchain.formats import hash_path, read_chat, read_documents, read_meta
from fullchain.world import ATTRIBUTES, WorldConfig, build_world, documents, write_world

HANZI = re.compile(r"[\u4e00-\u9fff]")


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _chat_text(row):
    parts = [m["content"] for m in row["messages"]]
    for m in row["messages"]:
        parts += [c["function"]["arguments"] for c in m.get("tool_calls", [])]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def world_files(quick_world):
    out, _ = quick_world
    docs = list(read_documents(out / "documents.jsonl"))
    chats = list(read_chat(out / "chat.jsonl"))
    entities = json.loads((out / "entities.json").read_text(encoding="utf-8"))
    heldout = _jsonl(out / "eval" / "heldout_qa.jsonl")
    train = _jsonl(out / "eval" / "train_qa.jsonl")
    return docs, chats, entities, heldout, train


def _without_created(meta_path):
    meta = json.loads(meta_path.read_text())
    del meta["lineage"]["created_utc"]
    return meta


def test_same_seed_same_bytes_other_seed_differs(tmp_path, quick_world):
    out, counts = quick_world
    again = write_world(tmp_path / "again", WorldConfig.preset("quick"))
    assert again == counts
    for name in (
        "documents.jsonl",
        "chat.jsonl",
        "entities.json",
        "eval/heldout_qa.jsonl",
        "eval/train_qa.jsonl",
    ):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert _without_created(out / "meta.json") == _without_created(tmp_path / "again/meta.json")
    assert hash_path(out) == hash_path(tmp_path / "again")
    other = WorldConfig.preset("quick", seed=1)
    write_world(tmp_path / "other", other)
    for name in ("documents.jsonl", "chat.jsonl", "eval/heldout_qa.jsonl"):
        assert (out / name).read_bytes() != (tmp_path / "other" / name).read_bytes()


def test_meta_and_counts(quick_world, world_files):
    out, counts = quick_world
    docs, chats, entities, heldout, train = world_files
    meta = read_meta(out, format="fullchain.world", max_version=1)
    assert meta["counts"] == counts
    assert meta["lineage"]["stage"] == "world" and meta["lineage"]["seed"] == 0
    assert counts["documents"] == len(docs) and counts["dialogues"] == len(chats)
    assert counts["heldout_questions"] == len(heldout) and counts["train_questions"] == len(train)
    assert len(entities["people"]) == counts["people"] == 160
    assert 400_000 < counts["text_bytes"] < 1_200_000  # the quick size
    kinds = {(d["meta"]["kind"], d["meta"]["lang"]) for d in docs}
    assert {("bio", "en"), ("bio", "zh"), ("qa", "en"), ("arith", "en"), ("city", "zh")} <= kinds


def test_heldout_people_never_in_qa_or_chat(world_files):
    docs, chats, entities, heldout, _ = world_files
    held = [p for p in entities["people"] if p["split"] == "heldout"]
    held_ids = {p["id"] for p in held}
    assert {r["person"] for r in heldout} == held_ids
    qa_text = "\n".join(d["text"] for d in docs if d["meta"]["kind"] == "qa")
    chat_text = "\n".join(_chat_text(r) for r in chats)
    assert not {d["meta"]["person"] for d in docs if d["meta"]["kind"] == "qa"} & held_ids
    for person in held:
        for name in person["name"].values():
            assert name not in qa_text, name
            assert name not in chat_text, name


def test_eval_questions_never_in_training_text(world_files):
    docs, chats, _, heldout, train = world_files
    training = "\n".join([d["text"] for d in docs] + [_chat_text(r) for r in chats])
    for row in heldout:
        assert row["question"] not in training and row["question_qa_form"] not in training
    # the eval wording is unseen even for train people, whose Q&A wording is trained on
    for row in train:
        assert row["question"] not in training
    assert sum(row["question_qa_form"] in training for row in train) > len(train) // 4


def test_answers_stated_in_every_bio(world_files):
    docs, _, _, heldout, train = world_files
    bios = {}
    for d in docs:
        if d["meta"]["kind"] == "bio":
            bios.setdefault((d["meta"]["person"], d["meta"]["lang"]), []).append(d["text"])
    for row in heldout + train:
        texts = bios[(row["person"], row["lang"])]
        assert texts and all(row["answer"] in t and row["name"] in t for t in texts), row["id"]


def test_eval_rows_shape(world_files):
    _, _, entities, heldout, train = world_files
    people = {p["id"]: p for p in entities["people"]}
    for row in heldout + train:
        assert len(row["choices"]) == len(set(row["choices"])) == 4
        assert row["answer"] in row["choices"] and row["name"] not in row["choices"]
        person = people[row["person"]]
        assert person["split"] == row["split"] and row["lang"] in person["langs"]
        assert row["answer"] == person["facts"][row["attribute"]][row["lang"]]
    assert {r["attribute"] for r in heldout} == set(ATTRIBUTES)
    assert {r["lang"] for r in heldout} == {"en", "zh"}


def test_chinese_text_present(world_files):
    docs, chats, _, heldout, _ = world_files
    zh_bios = [d for d in docs if d["meta"]["kind"] == "bio" and d["meta"]["lang"] == "zh"]
    assert zh_bios and all(len(HANZI.findall(d["text"])) > 20 for d in zh_bios)
    assert any(r["meta"]["lang"] == "zh" and HANZI.search(_chat_text(r)) for r in chats)
    assert any(HANZI.search(r["question"]) for r in heldout if r["lang"] == "zh")


def test_default_size_and_names():
    world = build_world(WorldConfig())
    text_bytes = sum(len(d["text"].encode()) for d in documents(world))
    assert 2_000_000 <= text_bytes <= 5_000_000
    for lang in ("en", "zh"):
        names = [p.name.lang(lang) for p in world.people]
        assert len(set(names)) == len(names)
    by_id = {p.id: p for p in world.people}
    assert all(by_id[p.mentor_id].split == p.split and p.mentor_id != p.id for p in world.people)
