import json

import pytest

from fullchain.config import DataError
from fullchain.formats import read_chat, to_messages_row, write_chat

TOOL_ROW = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 17*23?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "17*23"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "391"},
        {"role": "assistant", "content": "17*23 = 391.", "loss": True},
    ],
    "tools": [{"type": "function", "function": {"name": "calculator", "parameters": {}}}],
    "id": "r1",
}


def test_round_trip_openai(tmp_path):
    path = tmp_path / "chat.jsonl"
    plain = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    }
    assert write_chat(path, [plain, TOOL_ROW]) == 2
    rows = list(read_chat(path))
    assert rows[0] == plain
    assert rows[1]["messages"][2]["content"] == ""  # null content next to tool_calls
    assert rows[1]["messages"][2]["tool_calls"] == TOOL_ROW["messages"][2]["tool_calls"]
    assert rows[1]["tools"] == TOOL_ROW["tools"] and rows[1]["id"] == "r1"
    assert list(read_chat(path)) == rows  # stable: reading what was written changes nothing


def test_sharegpt_with_function_call():
    row = {
        "system": "sys",
        "conversations": [
            {"from": "human", "value": "weather?"},
            {"from": "function_call", "value": '{"name": "w", "arguments": {"city": "X"}}'},
            {"from": "observation", "value": "sunny"},
            {"from": "gpt", "value": "It is sunny."},
        ],
        "tools": '[{"name": "w", "description": "weather", "parameters": {}}]',
    }
    out = to_messages_row(row)
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    call = out["messages"][2]["tool_calls"][0]
    assert call["function"] == {"name": "w", "arguments": '{"city": "X"}'}
    assert out["messages"][3]["tool_call_id"] == call["id"]
    assert out["tools"] == [
        {"type": "function", "function": {"name": "w", "description": "weather", "parameters": {}}}
    ]


def test_alpaca_and_bare_list():
    row = {"instruction": "Add.", "input": "1 2", "output": "3", "history": [["q", "a"]]}
    msgs = to_messages_row(row)["messages"]
    assert [m["content"] for m in msgs] == ["q", "a", "Add.\n1 2", "3"]
    assert to_messages_row({"instruction": "Hi", "output": "Hello"})["messages"][0] == {
        "role": "user",
        "content": "Hi",
    }
    bare = [{"role": "user", "content": "x"}]
    assert to_messages_row(bare) == {"messages": bare}
    synth = {"id": "synth-00000", "instruction": "Add 2 and 3.", "response": "5."}
    assert [m["content"] for m in to_messages_row(synth)["messages"]] == ["Add 2 and 3.", "5."]


def test_alternative_formats_read_from_file(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        {"instruction": "a", "output": "b"},
        {"conversations": [{"from": "human", "value": "c"}, {"from": "gpt", "value": "d"}]},
        [{"role": "user", "content": "e"}],
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows = list(read_chat(path))
    assert [r["messages"][-1]["content"] for r in rows] == ["b", "d", "e"]


BAD_ROWS = [
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "role 'bot' is not one of"),
    ({"messages": [{"role": "user", "content": 3}]}, "'content' must be a string"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "must follow an assistant 'tool_calls'"),
    (
        {"messages": [{"role": "assistant", "content": "", "tool_calls": [{"name": "f"}]}]},
        "a tool call must look like",
    ),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}],
                }
            ]
        },
        "'arguments' must be a JSON object",
    ),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"x": 1}]}, r"tools\[0\]"),
    ({"conversations": [{"from": "alien", "value": "x"}]}, "'from' must be one of"),
    ({"prompt": "x"}, "unknown chat row"),
]


@pytest.mark.parametrize("row, message", BAD_ROWS)
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "fine"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=message) as err:
        list(read_chat(path))
    assert str(err.value).startswith(f"{path}:2:")


def test_write_rejects_bad_row(tmp_path):
    with pytest.raises(DataError, match="row #0"):
        write_chat(tmp_path / "c.jsonl", [{"messages": [{"role": "user"}]}])
    assert not (tmp_path / "c.jsonl").exists()
