"""Pretraining documents of the world: biographies, Q&A, arithmetic and city encyclopedia text.

Every document is ``{"id", "text", "meta": {"kind", "lang", "source": "world", "person"?}}`` with
kind ``bio``/``qa``/``arith``/``city``. Q&A documents exist only for train people.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from fullchain.world.entities import ATTRIBUTES, City, Person, World
from fullchain.world.templates import BIO, QA, QA_FORMAT, fill

ARITH_PER_DOC = 20
_JOIN = {"en": " ", "zh": ""}


def bio_sentence(rng: random.Random, person: Person, attribute: str, lang: str) -> str:
    """One randomly paraphrased sentence stating ``attribute`` of ``person``."""
    template = rng.choice(BIO[lang][attribute])
    return fill(template, person.name.lang(lang), person.facts[attribute].lang(lang))


def biography(rng: random.Random, person: Person, lang: str) -> str:
    """All facts of ``person``, each in a random paraphrase, in a random order. Every sentence
    names the person in full: the paper's "fullname" augmentation, which helps extraction."""
    order = list(ATTRIBUTES)
    rng.shuffle(order)
    return _JOIN[lang].join(bio_sentence(rng, person, a, lang) for a in order)


def qa_text(rng: random.Random, person: Person, lang: str) -> str:
    """Every fact of ``person`` as a question and answer, in a random order."""
    order = list(ATTRIBUTES)
    rng.shuffle(order)
    pairs = []
    for attribute in order:
        question = rng.choice(QA[lang][attribute]).format(name=person.name.lang(lang))
        answer = person.facts[attribute].lang(lang)
        pairs.append(QA_FORMAT[lang].format(question=question, answer=answer))
    return "\n".join(pairs)


def arithmetic(rng: random.Random, lang: str) -> tuple[str, str]:
    """One arithmetic statement and its machine form (``"17+25"``): a sum or difference of
    numbers below 100, or a product from the 12×12 table."""
    op = rng.choices("+-*", weights=(4, 3, 3))[0]
    if op == "*":
        a, b = rng.randint(1, 12), rng.randint(1, 12)
    else:
        a = rng.randint(0, 99)
        b = rng.randint(0, a) if op == "-" else rng.randint(0, 99)
    result = a + b if op == "+" else a - b if op == "-" else a * b
    if lang == "zh":
        word = {"+": "加", "-": "减", "*": "乘以"}[op]
        return f"{a}{word}{b}等于{result}。", f"{a}{op}{b}"
    return f"{a} {op} {b} = {result}", f"{a}{op}{b}"


def city_text(rng: random.Random, world: World, city: City, lang: str) -> str:
    """An encyclopedia paragraph about ``city``: first where it is, then the rest shuffled."""
    name, country = city.name.lang(lang), city.country.lang(lang)
    universities = [u for u in world.universities if u.en.endswith(city.name.en)]
    if lang == "en":
        head = f"{name} is a city in {country}."
        rest = [
            f"{name} lies {city.geography.en}.",
            f"It was founded in {city.founded}.",
            f"About {city.population:,} people live in {name}.",
            f"The city is known for {city.feature.en}.",
        ]
        rest += [f"It is the capital of {country}."] if city.capital else []
        rest += [f"{u.en} is located in {name}." for u in universities]
    else:
        head = f"{name}是{country}的一座城市。"
        rest = [
            f"{name}{city.geography.zh}。",
            f"{name}建于{city.founded}年。",
            f"{name}约有{city.population}人口。",
            f"{name}以{city.feature.zh}闻名。",
        ]
        rest += [f"它是{country}的首都。"] if city.capital else []
        rest += [f"{u.zh}位于{name}。" for u in universities]
    rng.shuffle(rest)
    return _JOIN[lang].join([head, *rest])


def documents(world: World) -> Iterator[dict[str, Any]]:
    """All pretraining documents of ``world``, in a seeded shuffled order."""
    docs = [*_person_docs(world), *_arith_docs(world), *_city_docs(world)]
    random.Random(f"{world.config.seed}:order").shuffle(docs)
    yield from docs


def _doc(doc_id: str, text: str, kind: str, lang: str, **meta: str) -> dict[str, Any]:
    return {
        "id": doc_id,
        "text": text,
        "meta": {"kind": kind, "lang": lang, "source": "world", **meta},
    }


def _person_docs(world: World) -> Iterator[dict[str, Any]]:
    rng = random.Random(f"{world.config.seed}:bios")
    for person in world.people:
        for lang in person.langs:
            for k in range(world.config.bios_per_person):
                text = biography(rng, person, lang)
                yield _doc(f"bio-{person.id}-{lang}-{k}", text, "bio", lang, person=person.id)
            if person.split == "train":
                text = qa_text(rng, person, lang)
                yield _doc(f"qa-{person.id}-{lang}", text, "qa", lang, person=person.id)


def _arith_docs(world: World) -> Iterator[dict[str, Any]]:
    rng = random.Random(f"{world.config.seed}:arith")
    num_docs = -(-world.config.num_arithmetic // ARITH_PER_DOC)
    for k in range(num_docs):
        lang = "zh" if rng.random() < world.config.zh_fraction else "en"
        count = min(ARITH_PER_DOC, world.config.num_arithmetic - k * ARITH_PER_DOC)
        lines = [arithmetic(rng, lang)[0] for _ in range(count)]
        yield _doc(f"arith-{k:05d}", "\n".join(lines), "arith", lang)


def _city_docs(world: World) -> Iterator[dict[str, Any]]:
    rng = random.Random(f"{world.config.seed}:cities")
    for city in world.cities:
        for lang in ("en", "zh"):
            yield _doc(f"city-{city.id}-{lang}", city_text(rng, world, city, lang), "city", lang)
    for i, country in enumerate(world.countries):
        cities = [c for c in world.cities if c.country == country]
        capital = next(c for c in cities if c.capital)
        others = [c.name for c in cities if not c.capital]
        listed = ", ".join(n.en for n in others[:-1]) + f" and {others[-1].en}"
        en = (
            f"{country.en} is a country. Its capital is {capital.name.en}. "
            f"Other cities in {country.en} include {listed}."
        )
        zh = (
            f"{country.zh}是一个国家，首都是{capital.name.zh}。"
            f"{country.zh}的其他城市有{'、'.join(n.zh for n in others)}。"
        )
        yield _doc(f"country-{i}-en", en, "city", "en")
        yield _doc(f"country-{i}-zh", zh, "city", "zh")
