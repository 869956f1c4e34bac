"""The entities of the invented world: people, cities, countries, universities, companies.

:func:`build_world` is a pure function of its config: every random choice comes from a
``random.Random`` seeded with ``"<seed>:<part>"`` (string seeds hash with sha512, so they do not
depend on PYTHONHASHSEED), and each part has its own stream so that changing one count does not
reshuffle the others.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from fullchain.config import ConfigError
from fullchain.world import vocab
from fullchain.world.config import WorldConfig

ATTRIBUTES = (
    "birth_year",
    "birth_city",
    "university",
    "major",
    "employer",
    "occupation",
    "mentor",
    "favorite_number",
)
NUM_COUNTRIES = 6
NUM_CITIES = 24
NUM_UNIVERSITIES = 14
NUM_COMPANIES = 24


@dataclass(frozen=True)
class Name:
    """One thing's rendering in English and in Chinese."""

    en: str
    zh: str

    def lang(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh


@dataclass(frozen=True)
class City:
    id: str
    name: Name
    country: Name
    capital: bool
    founded: int
    population: int
    feature: Name
    geography: Name


@dataclass(frozen=True)
class Person:
    """A person; ``facts`` maps each of ATTRIBUTES to its value in both languages. ``split`` is
    "train" (Q&A is trained on) or "heldout" (only biographies are); ``has_zh`` marks people with
    Chinese biographies. A mentor is always a person of the same split."""

    id: str
    name: Name
    split: str
    has_zh: bool
    mentor_id: str
    facts: dict[str, Name]

    @property
    def langs(self) -> tuple[str, ...]:
        return ("en", "zh") if self.has_zh else ("en",)


@dataclass
class World:
    """All entities, plus the pool of possible values per attribute (for eval distractors)."""

    config: WorldConfig
    people: list[Person]
    cities: list[City]
    countries: list[Name]
    universities: list[Name]
    companies: list[Name]
    pools: dict[str, list[Name]] = field(default_factory=dict)

    def split(self, split: str) -> list[Person]:
        return [p for p in self.people if p.split == split]


def _rng(cfg: WorldConfig, part: str) -> random.Random:
    return random.Random(f"{cfg.seed}:{part}")


def _word(rng: random.Random, num_syllables: int) -> Name:
    picks = [rng.choice(vocab.SYLLABLES) for _ in range(num_syllables)]
    return Name("".join(en for en, _ in picks).capitalize(), "".join(zh for _, zh in picks))


def _unique(
    rng: random.Random, count: int, make: Callable[[], Name], taken: set[str]
) -> list[Name]:
    """Draw ``count`` names whose English and Chinese forms are new and not substrings of one
    another (so a text search for one person's name never matches another's)."""
    out: list[Name] = []
    for _ in range(count * 200):
        if len(out) == count:
            return out
        name = make()
        clash = any(name.en in n.en or n.en in name.en for n in out) or any(
            name.zh in n.zh or n.zh in name.zh for n in out
        )
        if not clash and name.en not in taken and name.zh not in taken:
            out.append(name)
            taken.update((name.en, name.zh))
    raise ConfigError(f"could not draw {count} distinct names; lower world.num_people")


def _person_name(rng: random.Random) -> Name:
    given, surname = _word(rng, 2), _word(rng, rng.choice((2, 2, 3)))
    return Name(f"{given.en} {surname.en}", f"{given.zh}·{surname.zh}")


def _places(cfg: WorldConfig, taken: set[str]) -> tuple[list[Name], list[City]]:
    rng = _rng(cfg, "places")
    countries = [
        # "Telsi" + "ia" reads badly, so a word ending in a vowel gets "nia"
        Name(w.en + ("nia" if w.en[-1] in "aeiou" else "ia"), w.zh + "亚")
        for w in _unique(rng, NUM_COUNTRIES, lambda: _word(rng, 2), taken)
    ]
    cities = []
    for i, name in enumerate(_unique(rng, NUM_CITIES, lambda: _word(rng, 3), taken)):
        cities.append(
            City(
                id=f"c{i:02d}",
                name=name,
                country=countries[i % NUM_COUNTRIES],
                capital=i < NUM_COUNTRIES,  # the first city drawn for each country is its capital
                founded=rng.randrange(800, 1900),
                population=rng.randrange(20, 2000) * 1000,
                feature=Name(*rng.choice(vocab.CITY_FEATURES)),
                geography=Name(*rng.choice(vocab.GEOGRAPHY)),
            )
        )
    return countries, cities


def _institutions(cfg: WorldConfig, cities: list[City], taken: set[str]):
    rng = _rng(cfg, "institutions")
    homes = rng.sample(cities, NUM_UNIVERSITIES // 2)
    universities = [Name(f"University of {c.name.en}", f"{c.name.zh}大学") for c in homes]
    for w in _unique(rng, NUM_UNIVERSITIES - len(universities), lambda: _word(rng, 2), taken):
        universities.append(Name(f"{w.en} Institute of Technology", f"{w.zh}理工学院"))
    companies = []
    for w in _unique(rng, NUM_COMPANIES, lambda: _word(rng, 2), taken):
        suffix_en, suffix_zh = rng.choice(vocab.COMPANY_SUFFIXES)
        companies.append(Name(f"{w.en} {suffix_en}", f"{w.zh}{suffix_zh}"))
    return universities, companies


def _pools(world: World, people: list[Name]) -> dict[str, list[Name]]:
    numbers = lambda values: [Name(str(v), str(v)) for v in values]
    return {
        "birth_year": numbers(vocab.BIRTH_YEARS),
        "birth_city": [c.name for c in world.cities],
        "university": list(world.universities),
        "major": [Name(*m) for m in vocab.MAJORS],
        "employer": list(world.companies),
        "occupation": [Name(*o) for o in vocab.OCCUPATIONS],
        "mentor": people,
        "favorite_number": numbers(vocab.FAVORITE_NUMBERS),
    }


def build_world(cfg: WorldConfig) -> World:
    """Draw every entity of the world described by ``cfg`` (deterministic in ``cfg``)."""
    taken: set[str] = set()
    countries, cities = _places(cfg, taken)
    universities, companies = _institutions(cfg, cities, taken)
    world = World(cfg, [], cities, countries, universities, companies)
    rng = _rng(cfg, "people")
    names = _unique(rng, cfg.num_people, lambda: _person_name(rng), taken)
    world.pools = _pools(world, names)
    order = list(range(cfg.num_people))
    rng.shuffle(order)
    num_train = round(cfg.num_people * cfg.qa_fraction)
    sides = {"train": sorted(order[:num_train]), "heldout": sorted(order[num_train:])}
    zh = _zh_people(rng, cfg, sides["train"]) | _zh_people(rng, cfg, sides["heldout"])
    train = set(sides["train"])
    for i, name in enumerate(names):
        split = "train" if i in train else "heldout"
        mentor = rng.choice([j for j in sides[split] if j != i])
        facts = {a: rng.choice(world.pools[a]) for a in ATTRIBUTES if a != "mentor"}
        facts["mentor"] = names[mentor]
        person = Person(f"p{i:04d}", name, split, i in zh, f"p{mentor:04d}", facts)
        world.people.append(person)
    return world


def _zh_people(rng: random.Random, cfg: WorldConfig, ids: list[int]) -> set[int]:
    # Drawn per split so both train and held-out people have Chinese biographies.
    return set(rng.sample(ids, round(len(ids) * cfg.zh_fraction)))
