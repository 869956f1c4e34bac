import json
import re

from fullchain.formats import read_chat
from fullchain.world import TOOLS

EXPRESSION = re.compile(r"^(\d+)([+\-*])(\d+)$")


def _compute(expression):
    a, op, b = EXPRESSION.match(expression).groups()
    a, b = int(a), int(b)
    return a + b if op == "+" else a - b if op == "-" else a * b


def test_tool_dialogues_are_openai_shaped_and_correct(quick_world):
    out, _ = quick_world
    entities = json.loads((out / "entities.json").read_text(encoding="utf-8"))
    names = {n: p for p in entities["people"] for n in p["name"].values()}
    rows = list(read_chat(out / "chat.jsonl"))  # validates roles, tool_calls, tool order
    kinds = {r["meta"]["kind"] for r in rows}
    assert kinds == {"facts", "calculator", "search"}
    num_calc = 0
    for row in rows:
        if row["meta"]["kind"] == "facts":
            assert "tools" not in row and row["messages"][-1]["role"] == "assistant"
            continue
        assert row["tools"] == TOOLS
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant", "tool", "assistant"]
        call = row["messages"][2]["tool_calls"][0]
        assert call["type"] == "function" and call["id"].startswith("call_")
        assert row["messages"][3]["tool_call_id"] == call["id"]
        args = json.loads(call["function"]["arguments"])
        result = row["messages"][3]["content"]
        if call["function"]["name"] == "calculator":
            num_calc += 1
            assert set(args) == {"expression"}
            assert result == str(_compute(args["expression"]))
            assert result in row["messages"][4]["content"]
        else:
            assert call["function"]["name"] == "search" and set(args) == {"query"}
            person = next(p for n, p in names.items() if args["query"].startswith(n))
            assert person["split"] == "train"
            assert any(v[row["meta"]["lang"]] in result for v in person["facts"].values())
    assert num_calc > 50


def test_calculator_arguments_match_openai_example(quick_world):
    out, _ = quick_world
    line = next(
        line
        for line in (out / "chat.jsonl").read_text(encoding="utf-8").splitlines()
        if '"calculator","arguments"' in line
    )
    assert re.search(r'"arguments":"\{\\"expression\\": \\"\d+[+\-*]\d+\\"\}"', line)


def test_tool_schemas():
    assert [t["function"]["name"] for t in TOOLS] == ["calculator", "search"]
    for tool in TOOLS:
        assert tool["type"] == "function"
        params = tool["function"]["parameters"]
        assert params["type"] == "object" and params["required"]
        assert set(params["required"]) <= set(params["properties"])
