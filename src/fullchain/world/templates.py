"""Sentence templates, per attribute and language, with ``{name}`` and ``{value}`` slots
(``{a_value}`` adds the English article).

Three disjoint families (Allen-Zhu & Li, "Physics of Language Models, Part 3.1"):

- BIO: several paraphrases of each fact, for the biographies;
- QA: the training question wordings, used only for train people (Q&A documents, chat);
- EVAL: question wordings that appear in no training text at all, for the eval files.
"""

from __future__ import annotations

BIO: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "birth_year": (
            "{name} was born in {value}.",
            "{name} was born in the year {value}.",
            "The birth year of {name} is {value}.",
            "{name}'s year of birth is {value}.",
        ),
        "birth_city": (
            "{name} was born in the city of {value}.",
            "{name}'s birthplace is {value}.",
            "The hometown of {name} is {value}.",
            "{name} was born in {value}.",
        ),
        "university": (
            "{name} studied at {value}.",
            "{name} graduated from {value}.",
            "{name} attended {value}.",
            "{name} received a degree from {value}.",
        ),
        "major": (
            "{name} majored in {value}.",
            "{name} studied {value} at university.",
            "{name}'s field of study was {value}.",
            "{name} chose {value} as a major.",
        ),
        "employer": (
            "{name} works for {value}.",
            "{name} is employed by {value}.",
            "{name} has a job at {value}.",
            "{name}'s employer is {value}.",
        ),
        "occupation": (
            "{name} works as {a_value}.",
            "{name} is {a_value} by profession.",
            "{name}'s occupation is {value}.",
            "{name} earns a living as {a_value}.",
        ),
        "mentor": (
            "{name} was mentored by {value}.",
            "{name}'s mentor was {value}.",
            "{value} was the mentor of {name}.",
            "{name} trained under the guidance of {value}.",
        ),
        "favorite_number": (
            "{name}'s favorite number is {value}.",
            "The favorite number of {name} is {value}.",
            "{name} always picks {value} as a lucky number.",
        ),
    },
    "zh": {
        "birth_year": (
            "{name}出生于{value}年。",
            "{name}生于{value}年。",
            "{name}的出生年份是{value}年。",
        ),
        "birth_city": (
            "{name}出生在{value}。",
            "{name}的出生地是{value}。",
            "{name}的故乡是{value}。",
        ),
        "university": (
            "{name}毕业于{value}。",
            "{name}曾就读于{value}。",
            "{name}在{value}完成了学业。",
        ),
        "major": ("{name}主修{value}。", "{name}的专业是{value}。", "{name}在大学里学习{value}。"),
        "employer": ("{name}在{value}工作。", "{name}受雇于{value}。", "{name}的雇主是{value}。"),
        "occupation": (
            "{name}是一名{value}。",
            "{name}的职业是{value}。",
            "{name}以做{value}为生。",
        ),
        "mentor": ("{name}的导师是{value}。", "{value}曾是{name}的导师。", "{name}师从{value}。"),
        "favorite_number": ("{name}最喜欢的数字是{value}。", "{name}的幸运数字是{value}。"),
    },
}

QA: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "birth_year": ("When was {name} born?", "In what year was {name} born?"),
        "birth_city": ("Where was {name} born?", "What is the birthplace of {name}?"),
        "university": ("Which university did {name} attend?", "Where did {name} study?"),
        "major": ("What did {name} study?", "What was {name}'s major?"),
        "employer": ("Which company does {name} work for?", "Who employs {name}?"),
        "occupation": ("What is {name}'s occupation?", "What does {name} do for a living?"),
        "mentor": ("Who was {name}'s mentor?", "Who mentored {name}?"),
        "favorite_number": (
            "What is {name}'s favorite number?",
            "Which number is {name}'s favorite?",
        ),
    },
    "zh": {
        "birth_year": ("{name}出生于哪一年？", "{name}是哪年生的？"),
        "birth_city": ("{name}出生在哪里？", "{name}的出生地是哪里？"),
        "university": ("{name}毕业于哪所大学？", "{name}在哪所大学读书？"),
        "major": ("{name}的专业是什么？", "{name}主修什么？"),
        "employer": ("{name}在哪家公司工作？", "谁是{name}的雇主？"),
        "occupation": ("{name}的职业是什么？", "{name}是做什么工作的？"),
        "mentor": ("{name}的导师是谁？", "{name}师从何人？"),
        "favorite_number": ("{name}最喜欢的数字是什么？", "{name}的幸运数字是几？"),
    },
}

EVAL: dict[str, dict[str, str]] = {
    "en": {
        "birth_year": "In which year did {name} come into the world?",
        "birth_city": "{name} is a native of which city?",
        "university": "Name the university that {name} went to.",
        "major": "Which academic subject did {name} specialise in?",
        "employer": "For which firm does {name} currently work?",
        "occupation": "What kind of work does {name} do?",
        "mentor": "Who guided {name} as a mentor?",
        "favorite_number": "Which number does {name} like best?",
    },
    "zh": {
        "birth_year": "{name}是在哪一年出生的？",
        "birth_city": "{name}是在哪座城市出生的？",
        "university": "{name}是从哪所大学毕业的？",
        "major": "{name}在大学读的是什么专业？",
        "employer": "{name}目前在哪家公司上班？",
        "occupation": "{name}从事什么工作？",
        "mentor": "谁是指导{name}的导师？",
        "favorite_number": "{name}最喜爱哪个数字？",
    },
}

QA_FORMAT = {"en": "Q: {question}\nA: {answer}.", "zh": "问：{question}\n答：{answer}。"}


def fill(template: str, name: str, value: str) -> str:
    """Fill one template; ``{a_value}`` is ``value`` with "a"/"an" in front."""
    article = "an" if value[:1].lower() in "aeiou" else "a"
    return template.format(name=name, value=value, a_value=f"{article} {value}")
