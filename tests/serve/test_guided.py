"""Guided decoding through the server on a tiny random model: json_schema replies that
validate, forced tool calls (tool_choice "required" and named) in each template's format,
streamed and not, and the 400s."""

import copy
import json

import httpx
import openai
import pytest
from serve_helpers import client, engine_config, running_server
from test_json_mode import SCHEMAS

from fullchain.checkpoint.pretrained import load_pretrained
from fullchain.engine import Engine
from fullchain.tokenizer import get_builtin_template

jsonschema = pytest.importorskip("jsonschema")

USER = [{"role": "user", "content": "the quick brown fox"}]
WEATHER = {"type": "object", "additionalProperties": False, "required": ["city", "unit", "days"],
           "properties": {"city": {"type": "string"},
                          "unit": {"enum": ["celsius", "fahrenheit"]},
                          "days": {"type": "integer"}}}
TIME = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"],
        "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": TIME}}]
PARAMS = {"get_weather": WEATHER, "get_time": TIME}


def json_schema_format(schema) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema,
                                                   "strict": True}}


@pytest.mark.parametrize("name", ["nested", "enum", "array", "anyof_ref"])
def test_json_schema_replies_validate(server, name):
    url, _, _ = server
    schema = SCHEMAS[name]
    for seed in (1, 2):
        r = client(url).chat.completions.create(
            model="tiny", messages=USER, max_tokens=80, temperature=1.0, seed=seed, n=3,
            response_format=json_schema_format(schema))
        for choice in r.choices:
            assert choice.finish_reason == "stop", choice.message.content
            jsonschema.validate(json.loads(choice.message.content), schema)


def test_json_schema_fits_a_small_max_tokens_and_streams(server):
    url, _, _ = server
    schema = SCHEMAS["enum"]
    chunks = list(client(url).chat.completions.create(
        model="tiny", messages=USER, max_tokens=40, temperature=1.0, seed=5, stream=True,
        response_format=json_schema_format(schema)))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    jsonschema.validate(json.loads(text), schema)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_json_object_with_min_tokens_past_the_object_still_ends(server):
    url, _, _ = server
    r = httpx.post(f"{url}/v1/chat/completions", json={
        "messages": USER, "max_tokens": 30, "temperature": 0, "min_tokens": 30,
        "response_format": {"type": "json_object"}}).json()
    assert isinstance(json.loads(r["choices"][0]["message"]["content"]), dict)
    assert httpx.get(f"{url}/health").status_code == 200


def test_guided_decoding_errors(server):
    url, _, _ = server
    c = client(url)
    with pytest.raises(openai.BadRequestError, match="'minimum'") as e:
        c.chat.completions.create(model="tiny", messages=USER, max_tokens=5,
                                  response_format=json_schema_format(
                                      {"type": "integer", "minimum": 1}))
    assert e.value.body["param"] == "response_format.json_schema.schema.minimum"
    with pytest.raises(openai.BadRequestError, match="'get_date'"):
        c.chat.completions.create(model="tiny", messages=USER, max_tokens=5, tools=TOOLS,
                                  tool_choice={"type": "function",
                                               "function": {"name": "get_date"}})
    with pytest.raises(openai.BadRequestError, match="needs tools"):
        c.chat.completions.create(model="tiny", messages=USER, max_tokens=5,
                                  tool_choice="required")
    r = httpx.post(f"{url}/v1/chat/completions", json={
        "messages": USER, "response_format": {"type": "json_schema"}})
    assert r.status_code == 400 and "json_schema" in r.json()["error"]["message"]


def _calls_of(c, tool_choice, *, stream: bool, seed: int) -> tuple[list, str]:
    kw = dict(model="tiny", messages=USER, tools=TOOLS, tool_choice=tool_choice,
              max_tokens=80, temperature=1.0, seed=seed)
    if not stream:
        choice = c.chat.completions.create(**kw).choices[0]
        calls = [(t.function.name, t.function.arguments, t.id)
                 for t in choice.message.tool_calls or []]
        return calls, choice.finish_reason
    chunks = list(c.chat.completions.create(stream=True, **kw))
    calls = {}
    for ch in chunks:
        for d in ch.choices[0].delta.tool_calls or []:
            if d.id:
                calls[d.index] = [d.function.name, "", d.id]
            calls[d.index][1] += d.function.arguments or ""
    return [tuple(v) for _, v in sorted(calls.items())], chunks[-1].choices[0].finish_reason


def _check_forced_calls(url):
    c = client(url)
    for stream in (False, True):
        for seed in (1, 2):
            named = {"type": "function", "function": {"name": "get_time"}}
            for tool_choice, names in (("required", set(PARAMS)), (named, {"get_time"})):
                calls, reason = _calls_of(c, tool_choice, stream=stream, seed=seed)
                assert reason == "tool_calls" and len(calls) == 1, calls
                name, arguments, call_id = calls[0]
                assert name in names and call_id
                jsonschema.validate(json.loads(arguments), PARAMS[name])


def tool_server(model_dir, template: str):
    """A server whose context holds the tool definitions (the tiny vocabulary spells them out
    nearly character by character), with the given chat template."""
    model, tok = load_pretrained(model_dir)
    tok = copy.copy(tok)  # same vocabulary, maybe another template (another tool-call format)
    tok._templates = {}
    tok.chat_template = get_builtin_template(template)
    return running_server(Engine(model, tok, engine_config(max_model_len=1536)), tok)


@pytest.mark.parametrize("template", ["chatml", "internlm2", "llama3"])
def test_forced_tool_calls(model_dir, template):
    """chatml is the Hermes format; the model must call a tool, or the named one."""
    with tool_server(model_dir, template) as (url, _):
        _check_forced_calls(url)
        r = client(url).chat.completions.create(model="tiny", messages=USER, tools=TOOLS,
                                                tool_choice="none", max_tokens=5)
        assert r.choices[0].message.tool_calls is None  # "none" and "auto" are as before
