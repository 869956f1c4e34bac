import random

import pytest

WORDS = ("time year people way day man thing woman life child world school state family student "
         "group country problem hand part place case week company system program question work "
         "government number night point home water room mother area money story fact month lot "
         "right study book eye job word business issue side kind head house service friend father "
         "power hour game line end member law car city community name president team minute idea "
         "kid body information back parent face others level office door health person art war "
         "history party result change morning reason research girl guy moment air teacher force "
         "education").split()


def english(rng: random.Random, n_sentences: int = 8) -> str:
    """Plain English prose that passes the default quality filters."""
    out = []
    for _ in range(n_sentences):
        ws = [rng.choice(WORDS) for _ in range(rng.randint(9, 14))]
        out.append(f"The {ws[0]} of the {ws[1]} is {' '.join(ws[2:])} and that was it.")
    return " ".join(out)


@pytest.fixture
def rng():
    return random.Random(0)
