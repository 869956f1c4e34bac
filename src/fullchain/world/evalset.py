"""Question sets for evaluating what a model learned about the world.

One row per person, attribute and language the person has biographies in::

    {"id", "question", "question_qa_form", "answer", "choices", "person", "name", "attribute",
     "lang", "split"}

``question`` uses the EVAL wording, which appears in no training text; ``question_qa_form`` uses
a training Q&A wording (for held-out people it is still never in training: their Q&A is not).
``answer`` is the bare value as the biographies state it; ``choices`` holds it and three
distractors of the same attribute, shuffled.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from fullchain.world.entities import ATTRIBUTES, World
from fullchain.world.templates import EVAL, QA

NUM_CHOICES = 4


def questions(world: World, split: str) -> Iterator[dict[str, Any]]:
    """Eval rows about the people of ``split`` ("heldout" or "train"), in person order."""
    rng = random.Random(f"{world.config.seed}:eval:{split}")
    for person in world.split(split):
        for lang in person.langs:
            name = person.name.lang(lang)
            for attribute in ATTRIBUTES:
                answer = person.facts[attribute].lang(lang)
                yield {
                    "id": f"{split}-{person.id}-{attribute}-{lang}",
                    "question": EVAL[lang][attribute].format(name=name),
                    "question_qa_form": QA[lang][attribute][0].format(name=name),
                    "answer": answer,
                    "choices": _choices(rng, world, attribute, lang, answer=answer, exclude=name),
                    "person": person.id,
                    "name": name,
                    "attribute": attribute,
                    "lang": lang,
                    "split": split,
                }


def _choices(
    rng: random.Random, world: World, attribute: str, lang: str, *, answer: str, exclude: str
) -> list[str]:
    # The person's own name is never a distractor for their mentor.
    pool = sorted({v.lang(lang) for v in world.pools[attribute]} - {answer, exclude})
    choices = [answer, *rng.sample(pool, NUM_CHOICES - 1)]
    rng.shuffle(choices)
    return choices
