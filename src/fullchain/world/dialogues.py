"""Chat dialogues of the world (OpenAI messages form) for SFT: fact questions about train
people, and tool use with a ``calculator`` and a ``search`` tool.

Tool dialogues carry both schemas in ``tools`` and follow the OpenAI protocol: an assistant
message with ``tool_calls`` (arguments as a JSON string), a ``tool`` message with the result and
its ``tool_call_id``, then the final answer. Held-out people never appear in any dialogue.
"""

from __future__ import annotations

import json
import random
from typing import Any

from fullchain.world.entities import ATTRIBUTES, Person, World
from fullchain.world.templates import BIO, QA, fill
from fullchain.world.text import bio_sentence

SYSTEM_PROMPT = {
    "en": "You are a helpful assistant. Use a tool when it helps.",
    "zh": "你是一个乐于助人的助手。需要时请使用工具。",
}

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression with + - * / and parentheses.",
            "parameters": {
                "type": "object",
                "properties": {
                    "expression": {"type": "string", "description": "for example 17*23"}
                },
                "required": ["expression"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the encyclopedia and return the most relevant sentence.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "what to look up"}},
                "required": ["query"],
            },
        },
    },
]

# Words a search query adds to the person's name, per attribute.
SEARCH_TOPIC = {
    "en": {
        "birth_year": "birth year",
        "birth_city": "birthplace",
        "university": "university",
        "major": "major",
        "employer": "employer",
        "occupation": "occupation",
        "mentor": "mentor",
        "favorite_number": "favorite number",
    },
    "zh": {
        "birth_year": "出生年份",
        "birth_city": "出生地",
        "university": "大学",
        "major": "专业",
        "employer": "雇主",
        "occupation": "职业",
        "mentor": "导师",
        "favorite_number": "最喜欢的数字",
    },
}

_KINDS = ("facts", "calculator", "search")


def dialogues(world: World) -> list[dict[str, Any]]:
    """``world.config.num_dialogues`` chat rows: about 40% fact Q&A, 30% calculator and 30%
    search dialogues, each in Chinese with probability ``zh_fraction`` (when people allow)."""
    cfg = world.config
    rng = random.Random(f"{cfg.seed}:dialogues")
    train = world.split("train")
    train_zh = [p for p in train if p.has_zh]
    rows = []
    for k in range(cfg.num_dialogues):
        kind = rng.choices(_KINDS, weights=(4, 3, 3))[0]
        lang = (
            "zh" if rng.random() < cfg.zh_fraction and (train_zh or kind == "calculator") else "en"
        )
        people = train_zh if lang == "zh" else train
        if kind == "facts":
            row = _facts(rng, rng.choice(people), lang)
        elif kind == "calculator":
            row = _calculator(rng, lang, call_id=f"call_{k:05d}")
        else:
            row = _search(rng, rng.choice(people), lang, call_id=f"call_{k:05d}")
        row["id"] = f"chat-{k:05d}"
        row["meta"] = {"kind": kind, "lang": lang, "source": "world"}
        rows.append(row)
    return rows


def answer_sentence(person: Person, attribute: str, lang: str) -> str:
    """The canonical one-sentence answer: the first biography paraphrase."""
    value = person.facts[attribute].lang(lang)
    return fill(BIO[lang][attribute][0], person.name.lang(lang), value)


def _facts(rng: random.Random, person: Person, lang: str) -> dict[str, Any]:
    messages = []
    for attribute in rng.sample(ATTRIBUTES, rng.choice((1, 1, 2))):
        question = rng.choice(QA[lang][attribute]).format(name=person.name.lang(lang))
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer_sentence(person, attribute, lang)},
        ]
    return {"messages": messages}


def _tool_row(
    lang: str, question: str, call: dict[str, str], *, call_id: str, result: str, answer: str
) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT[lang]},
            {"role": "user", "content": question},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": call_id, "type": "function", "function": call}],
            },
            {"role": "tool", "tool_call_id": call_id, "name": call["name"], "content": result},
            {"role": "assistant", "content": answer},
        ],
        "tools": TOOLS,
    }


def _calculator(rng: random.Random, lang: str, *, call_id: str) -> dict[str, Any]:
    # Numbers too big for the arithmetic text, so the tool is worth calling.
    op = rng.choice("+-*")
    a, b = rng.randint(100, 999), rng.randint(10, 999)
    result = a + b if op == "+" else a - b if op == "-" else a * b
    expression = f"{a}{op}{b}"
    if lang == "zh":
        word = {"+": "加", "-": "减", "*": "乘以"}[op]
        question, answer = f"{a}{word}{b}等于多少？", f"{a}{word}{b}等于{result}。"
    else:
        question, answer = f"What is {a} {op} {b}?", f"{a} {op} {b} = {result}."
    arguments = json.dumps({"expression": expression})
    call = {"name": "calculator", "arguments": arguments}
    return _tool_row(lang, question, call, call_id=call_id, result=str(result), answer=answer)


def _search(rng: random.Random, person: Person, lang: str, *, call_id: str) -> dict[str, Any]:
    attribute = rng.choice(ATTRIBUTES)
    name = person.name.lang(lang)
    question = rng.choice(QA[lang][attribute]).format(name=name)
    sep = " " if lang == "en" else ""
    query = f"{name}{sep}{SEARCH_TOPIC[lang][attribute]}"
    arguments = json.dumps({"query": query}, ensure_ascii=False)
    call = {"name": "search", "arguments": arguments}
    result = bio_sentence(rng, person, attribute, lang)
    answer = answer_sentence(person, attribute, lang)
    return _tool_row(lang, question, call, call_id=call_id, result=result, answer=answer)
