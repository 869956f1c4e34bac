"""write_world: the world generator's output directory (layout in ``world/README.md``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fullchain.formats import make_lineage, write_chat, write_documents, write_meta
from fullchain.formats._jsonl import atomic_write, write_jsonl
from fullchain.world.config import WorldConfig
from fullchain.world.dialogues import TOOLS, dialogues
from fullchain.world.entities import ATTRIBUTES, World, build_world
from fullchain.world.evalset import questions
from fullchain.world.text import documents

FORMAT = "fullchain.world"
VERSION = 1


def write_world(out_dir: Path | str, cfg: WorldConfig | None = None) -> dict[str, Any]:
    """Generate the world of ``cfg`` (default ``WorldConfig()``) into ``out_dir`` and return the
    counts written (also stored in ``meta.json``, which is written last).

    Writes ``documents.jsonl``, ``chat.jsonl``, ``eval/heldout_qa.jsonl``,
    ``eval/train_qa.jsonl``, ``entities.json`` and ``meta.json``. Every file except meta.json's
    ``lineage.created_utc`` is a pure function of ``cfg``: the same seed gives the same bytes.
    """
    cfg = cfg or WorldConfig()
    out = Path(out_dir)
    world = build_world(cfg)
    docs = list(documents(world))
    counts: dict[str, Any] = {
        "people": len(world.people),
        "train_people": len(world.split("train")),
        "heldout_people": len(world.split("heldout")),
        "documents": write_documents(out / "documents.jsonl", docs),
        "documents_by_kind": _count_kinds(docs),
        "text_bytes": sum(len(d["text"].encode("utf-8")) for d in docs),
        "dialogues": write_chat(out / "chat.jsonl", dialogues(world)),
        "heldout_questions": write_jsonl(
            out / "eval/heldout_qa.jsonl", questions(world, "heldout")
        ),
        "train_questions": write_jsonl(out / "eval/train_qa.jsonl", questions(world, "train")),
    }
    with atomic_write(out / "entities.json") as f:
        json.dump(entities_json(world), f, ensure_ascii=False, indent=1)
        f.write("\n")
    lineage = make_lineage(stage="world", inputs=[], config=asdict(cfg), seed=cfg.seed)
    write_meta(out, format=FORMAT, version=VERSION, lineage=lineage, counts=counts)
    return counts


def _count_kinds(docs: list[dict[str, Any]]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for doc in docs:
        kind = f"{doc['meta']['kind']}_{doc['meta']['lang']}"
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def entities_json(world: World) -> dict[str, Any]:
    """Every entity as plain JSON: what a search tool or a grader needs to look facts up."""
    people = [
        {
            "id": p.id,
            "name": asdict(p.name),
            "split": p.split,
            "langs": list(p.langs),
            "mentor_id": p.mentor_id,
            "facts": {a: asdict(p.facts[a]) for a in ATTRIBUTES},
        }
        for p in world.people
    ]
    cities = [
        {
            "id": c.id,
            "name": asdict(c.name),
            "country": asdict(c.country),
            "capital": c.capital,
            "founded": c.founded,
            "population": c.population,
            "feature": asdict(c.feature),
            "geography": asdict(c.geography),
        }
        for c in world.cities
    ]
    return {
        "attributes": list(ATTRIBUTES),
        "people": people,
        "cities": cities,
        "countries": [asdict(n) for n in world.countries],
        "universities": [asdict(n) for n in world.universities],
        "companies": [asdict(n) for n in world.companies],
        "tools": TOOLS,
    }
