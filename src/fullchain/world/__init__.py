"""The embedded default's world: a deterministic generator of an invented encyclopedia (people,
places, numbers) in English and Chinese, with Q&A for part of the people, arithmetic, chat and
tool-use dialogues, and held-out question sets. See README.md in this folder for the files."""

from fullchain.world.config import PRESETS, WorldConfig
from fullchain.world.dialogues import TOOLS, dialogues
from fullchain.world.entities import ATTRIBUTES, City, Name, Person, World, build_world
from fullchain.world.evalset import questions
from fullchain.world.text import documents
from fullchain.world.writer import FORMAT, VERSION, entities_json, write_world

__all__ = [
    "ATTRIBUTES",
    "FORMAT",
    "PRESETS",
    "TOOLS",
    "VERSION",
    "City",
    "Name",
    "Person",
    "World",
    "WorldConfig",
    "build_world",
    "dialogues",
    "documents",
    "entities_json",
    "questions",
    "write_world",
]
