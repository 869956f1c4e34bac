"""Chat JSONL: SFT dialogues in OpenAI messages form (CONVENTIONS §8).

A row is ``{"messages": [...], "tools"?: [...]}`` with roles ``system``/``user``/``assistant``/
``tool``. An assistant message may carry OpenAI ``tool_calls`` (``{"id", "type": "function",
"function": {"name", "arguments": <JSON string>}}``), and a ``tool`` message answers them. A message
may set ``"loss": bool`` (XTuner; default: loss on assistant messages only). Reading also accepts
ShareGPT rows (``conversations`` of ``from``/``value``), Alpaca rows (``instruction``/``input``/
``output``, or ``response`` as Dolly and ``fullchain synth`` write it), a bare message list and
XTuner's ``dialogs`` key, and converts them to messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fullchain.config import DataError
from fullchain.formats._jsonl import iter_jsonl, write_jsonl

ROLES = ("system", "user", "assistant", "tool")
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
    "function_call": "assistant",
}
_KEPT_KEYS = ("id", "meta")


def write_chat(path: Path | str, rows: Iterable[Any]) -> int:
    """Write chat rows to ``path`` (atomically; gzip for ``.gz``) in OpenAI messages form and
    return how many. Rows in any form :func:`to_messages_row` accepts are converted first; a bad
    row raises DataError naming the path and the row's position."""

    def checked() -> Iterator[dict[str, Any]]:
        for i, row in enumerate(rows):
            yield to_messages_row(row, where=f"{path}: row #{i}")

    return write_jsonl(path, checked())


def read_chat(path: Path | str) -> Iterator[dict[str, Any]]:
    """Yield validated ``{"messages", "tools"?, "id"?, "meta"?}`` rows from a chat JSONL(.gz).

    Raises DataError naming ``file:line`` for a row that is not valid chat data."""
    for lineno, row in iter_jsonl(path, allow_list=True):
        yield to_messages_row(row, where=f"{path}:{lineno}")


def to_messages_row(row: Any, *, where: str = "chat row") -> dict[str, Any]:
    """Convert one row (OpenAI messages, bare message list, ``dialogs``, ShareGPT or Alpaca) to
    ``{"messages", "tools"?}`` (keeping ``id`` and ``meta``), validate it and return it.

    An assistant ``content`` of null next to ``tool_calls`` becomes ``""``; dict ``arguments``
    are encoded as a JSON string. Raises DataError starting with ``where`` for anything else."""
    if isinstance(row, list):
        row = {"messages": row}
    if not isinstance(row, dict):
        raise DataError(f"{where}: a chat row must be an object, got {type(row).__name__}")
    if "messages" in row or "dialogs" in row:
        messages = row.get("messages", row.get("dialogs"))
        tools = row.get("tools")
    elif "conversations" in row:
        messages, tools = _from_sharegpt(row, where)
    elif "instruction" in row:
        messages, tools = _from_alpaca(row, where), None
    else:
        raise DataError(
            f"{where}: unknown chat row (keys {sorted(row)}); expected 'messages' "
            "(OpenAI), 'conversations' (ShareGPT) or 'instruction'/'output' (Alpaca)"
        )
    out: dict[str, Any] = {"messages": _check_messages(messages, where)}
    if tools is not None:
        out["tools"] = _check_tools(tools, where)
    out.update({k: row[k] for k in _KEPT_KEYS if k in row})
    return out


def _check_messages(messages: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of message objects")
    out, pending_calls = [], False
    for i, msg in enumerate(messages):
        at = f"{where}: messages[{i}]"
        msg = _check_message(msg, at)
        if msg["role"] == "tool" and not pending_calls:
            raise DataError(f"{at}: a 'tool' message must follow an assistant 'tool_calls' message")
        pending_calls = bool(msg.get("tool_calls")) or (msg["role"] == "tool" and pending_calls)
        out.append(msg)
    return out


def _check_message(msg: Any, at: str) -> dict[str, Any]:
    if not isinstance(msg, dict):
        raise DataError(f"{at}: a message must be an object, got {type(msg).__name__}")
    role = msg.get("role")
    if role not in ROLES:
        raise DataError(f"{at}: role {role!r} is not one of {', '.join(ROLES)}")
    msg = dict(msg)
    if role == "assistant" and msg.get("tool_calls") is not None:
        msg["tool_calls"] = [
            _check_call(c, f"{at}.tool_calls[{j}]") for j, c in enumerate(msg["tool_calls"] or [])
        ]
        if msg.get("content") is None:
            msg["content"] = ""
    if not isinstance(msg.get("content"), str):
        raise DataError(
            f"{at}: 'content' must be a string, got {type(msg.get('content')).__name__}"
        )
    if "loss" in msg and not isinstance(msg["loss"], bool):
        raise DataError(f"{at}: 'loss' must be true or false, got {msg['loss']!r}")
    for key in ("name", "tool_call_id"):
        if key in msg and not isinstance(msg[key], str):
            raise DataError(f"{at}: {key!r} must be a string")
    return msg


def _check_call(call: Any, at: str) -> dict[str, Any]:
    shape = '{"id", "type": "function", "function": {"name", "arguments"}}'
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise DataError(f"{at}: a tool call must look like {shape}")
    if call.get("type", "function") != "function":
        raise DataError(f"{at}: tool call 'type' must be 'function', got {call.get('type')!r}")
    args = fn.get("arguments", fn.get("parameters", {}))
    if isinstance(args, dict):
        args = json.dumps(args, ensure_ascii=False)
    try:
        parsed = json.loads(args) if isinstance(args, str) else None
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise DataError(f"{at}: 'arguments' must be a JSON object encoded as a string")
    out = {"type": "function", "function": {"name": fn["name"], "arguments": args}}
    if "id" in call:
        if not isinstance(call["id"], str):
            raise DataError(f"{at}: tool call 'id' must be a string")
        out = {"id": call["id"], **out}
    return out


def _check_tools(tools: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(tools, str):  # ShareGPT/LLaMA-Factory store the tool list as a JSON string
        try:
            tools = json.loads(tools) if tools.strip() else []
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: 'tools' is a string but not JSON ({e.msg})") from e
    if not isinstance(tools, list):
        raise DataError(f"{where}: 'tools' must be a list of function schemas")
    out = []
    for i, tool in enumerate(tools):
        if isinstance(tool, dict) and "function" not in tool and "name" in tool:
            tool = {"type": "function", "function": tool}  # bare schema, as LLaMA-Factory writes
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise DataError(
                f"{where}: tools[{i}] must look like "
                '{"type": "function", "function": {"name", "description", "parameters"}}'
            )
        out.append(tool)
    return out


def _from_sharegpt(row: dict[str, Any], where: str) -> tuple[list[dict[str, Any]], Any]:
    turns = row["conversations"]
    if not isinstance(turns, list):
        raise DataError(f"{where}: 'conversations' must be a list of {{from, value}} objects")
    messages: list[dict[str, Any]] = []
    if isinstance(row.get("system"), str) and row["system"]:
        messages.append({"role": "system", "content": row["system"]})
    call_ids: list[str] = []  # ids of calls not yet answered, so observations can point to them
    for i, turn in enumerate(turns):
        at = f"{where}: conversations[{i}]"
        if not isinstance(turn, dict) or turn.get("from") not in _SHAREGPT_ROLES:
            raise DataError(f"{at}: 'from' must be one of {', '.join(_SHAREGPT_ROLES)}")
        value = turn.get("value")
        if not isinstance(value, str):
            raise DataError(f"{at}: 'value' must be a string")
        if turn["from"] == "function_call":
            messages.append(_sharegpt_call(value, len(messages), call_ids, at))
            continue
        msg = {"role": _SHAREGPT_ROLES[turn["from"]], "content": value}
        if msg["role"] == "tool" and call_ids:
            msg["tool_call_id"] = call_ids.pop(0)
        messages.append(msg)
    return messages, row.get("tools")


def _sharegpt_call(value: str, index: int, call_ids: list[str], at: str) -> dict[str, Any]:
    try:
        calls = json.loads(value)
    except json.JSONDecodeError as e:
        raise DataError(f"{at}: a function_call value must be JSON ({e.msg})") from e
    calls = calls if isinstance(calls, list) else [calls]
    tool_calls = []
    for j, call in enumerate(calls):
        if not isinstance(call, dict) or "name" not in call:
            raise DataError(f'{at}: a function_call must be {{"name", "arguments"}}')
        call_id = f"call_{index}_{j}"
        call_ids.append(call_id)
        tool_calls.append(
            {
                "id": call_id,
                "type": "function",
                "function": {"name": call["name"], "arguments": call.get("arguments", {})},
            }
        )
    return {"role": "assistant", "content": "", "tool_calls": tool_calls}


def _from_alpaca(row: dict[str, Any], where: str) -> list[dict[str, Any]]:
    fields = {k: row.get(k, "") for k in ("instruction", "input", "output", "system")}
    if "output" not in row:  # Dolly's and self-instruct's (and `fullchain synth`'s) spelling
        fields["output"] = row.get("response", "")
    for key, value in fields.items():
        if not isinstance(value, str):
            raise DataError(f"{where}: Alpaca {key!r} must be a string")
    messages = [{"role": "system", "content": fields["system"]}] if fields["system"] else []
    history = row.get("history") or []
    if not isinstance(history, list):
        raise DataError(f"{where}: Alpaca 'history' must be a list of [question, answer] pairs")
    for pair in history:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)
        ):
            raise DataError(f"{where}: Alpaca 'history' must be a list of [question, answer] pairs")
        messages += [
            {"role": "user", "content": pair[0]},
            {"role": "assistant", "content": pair[1]},
        ]
    # XTuner alpaca_map_fn and LLaMA-Factory both join instruction and input with one newline.
    prompt = fields["instruction"] + ("\n" + fields["input"] if fields["input"] else "")
    messages += [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": fields["output"]},
    ]
    return messages
