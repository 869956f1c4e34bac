"""WorldConfig: the few dials of the world generator, with named size presets."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from fullchain.config import ConfigError


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """Settings of :func:`fullchain.world.build_world` / :func:`write_world`.

    num_people: invented people (names are unique in English and Chinese).
    seed: everything is a pure function of the config; the same config gives the same bytes.
    bios_per_person: biography variants per person and language (paraphrased, shuffled order).
    qa_fraction: share of people whose Q&A goes into training ("train" people); the rest are
        held out: their biographies are trained on, their questions only appear in eval files.
    zh_fraction: share of people who also get Chinese biographies (and Chinese Q&A / eval).
    num_arithmetic: arithmetic statements ("17 + 25 = 42"), 20 per document.
    num_dialogues: chat dialogues (fact Q&A, calculator and search tool use).
    """

    num_people: int = 500
    seed: int = 0
    bios_per_person: int = 8
    qa_fraction: float = 0.5
    zh_fraction: float = 0.3
    num_arithmetic: int = 40000
    num_dialogues: int = 3000

    def __post_init__(self) -> None:
        for key in ("num_people", "bios_per_person", "num_arithmetic", "num_dialogues", "seed"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"world.{key}: must be a non-negative integer, got {value!r}")
        if not 8 <= self.num_people <= 5000:
            raise ConfigError(
                f"world.num_people: {self.num_people} is outside [8, 5000]; the name syllables "
                "give at most a few thousand unique people and distractors need at least 8"
            )
        if self.bios_per_person < 1:
            raise ConfigError("world.bios_per_person: must be at least 1")
        for key in ("qa_fraction", "zh_fraction"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"world.{key}: must be a fraction in [0, 1], got {value!r}")
        num_train = round(self.num_people * self.qa_fraction)
        if not 2 <= num_train <= self.num_people - 2:
            raise ConfigError(
                f"world.qa_fraction: {self.qa_fraction} leaves {num_train} train people of "
                f"{self.num_people}; each side needs at least 2 (mentors come from the same side)"
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> WorldConfig:
        """A named size: "quick" (~0.7 MB of text, for tests) or "default" (~3 MB), with
        ``overrides`` applied on top. Raises ConfigError for an unknown name or key."""
        if name not in PRESETS:
            raise ConfigError(f"world preset {name!r} is unknown; use one of {sorted(PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"world.{unknown[0]}: unknown key; known keys: {sorted(known)}")
        return replace(PRESETS[name], **overrides)


PRESETS: dict[str, WorldConfig] = {
    "default": WorldConfig(),
    "quick": WorldConfig(num_people=160, bios_per_person=6, num_arithmetic=8000, num_dialogues=400),
}
