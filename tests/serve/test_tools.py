"""Tool calls: the three parsers, whole and streamed, and end to end through the server with a
scripted model that says a tool call whatever the prompt."""

import json

import pytest
from serve_helpers import ScriptedModel, client, running_server

from fullchain.engine import Engine, EngineConfig
from fullchain.tokenizer import get_builtin_template
from fullchain.tokenizer.tool_calls import (
    HermesParser,
    InternLM2Parser,
    Llama3Parser,
    StreamingToolParser,
    parser_for_template,
)

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
USER = [{"role": "user", "content": "weather in Paris?"}]

CASES = {
    "hermes": (HermesParser(), 'Let me check.\n<tool_call>\n{"name": "get_weather", '
               '"arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", '
               '"arguments": {}}\n</tool_call>', "Let me check.\n", 2),
    "internlm2": (InternLM2Parser(), 'Sure<|action_start|><|plugin|>\n{"name": "get_weather", '
                  '"parameters": {"city": "Paris"}}<|action_end|>', "Sure", 1),
    "llama3": (Llama3Parser(), '<|python_tag|>{"name": "get_weather", "parameters": '
               '{"city": "Paris"}}; {"name": "get_time", "parameters": {}}', None, 2),
}


@pytest.mark.parametrize("name", list(CASES))
def test_parsers_whole_and_streamed(name):
    parser, text, content, num_calls = CASES[name]
    got_content, calls = parser.parse(text)
    assert got_content == content and len(calls) == num_calls
    assert calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    stream = StreamingToolParser(parser)
    events = []
    for i in range(0, len(text), 3):  # 3-character deltas split every tag somewhere
        events += stream.push(text[i:i + 3])
    events += stream.finish()
    streamed = "".join(e[1] for e in events if e[0] == "content")
    assert streamed == (content or "")
    tool_events = [e for e in events if e[0] == "tool"]
    assert [e[1] for e in tool_events] == list(range(num_calls))
    assert [e[2].arguments for e in tool_events] == [c.arguments for c in calls]


def test_plain_text_is_not_a_call():
    for parser in (HermesParser(), InternLM2Parser(), Llama3Parser()):
        assert parser.parse("just words, no call") == ("just words, no call", [])
    s = StreamingToolParser(Llama3Parser())
    events = s.push("{not json") + s.finish()
    assert "".join(e[1] for e in events if e[0] == "content") == "{not json"


def test_template_picks_the_parser():
    assert isinstance(parser_for_template(get_builtin_template("chatml")), HermesParser)
    assert isinstance(parser_for_template(get_builtin_template("internlm2")), InternLM2Parser)
    assert isinstance(parser_for_template(get_builtin_template("llama3")), Llama3Parser)


def scripted_server(tok, reply: str, messages, tools):
    prompt = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                     tokenize=True)
    script = tok.encode(reply) + [tok.token_to_id("<|im_end|>")]
    engine = Engine(ScriptedModel(tok.vocab_size, script, len(prompt)), tok,
                    EngineConfig(num_blocks=128, block_size=8))
    return running_server(engine, tok)


HERMES_REPLY = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                '</tool_call>')


def test_hermes_tool_call_through_the_server(tok):
    with scripted_server(tok, HERMES_REPLY, USER, TOOLS) as (url, _):
        c = client(url)
        r = c.chat.completions.create(model="tiny", messages=USER, tools=TOOLS, max_tokens=60)
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        call = choice.message.tool_calls[0]
        assert call.type == "function" and call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        chunks = list(c.chat.completions.create(model="tiny", messages=USER, tools=TOOLS,
                                                max_tokens=60, stream=True))
        deltas = [tc for ch in chunks for tc in (ch.choices[0].delta.tool_calls or [])]
        assert deltas and deltas[0].id and deltas[0].function.name == "get_weather"
        args = "".join(d.function.arguments or "" for d in deltas)
        assert json.loads(args) == {"city": "Paris"}
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        # the call and its result go back into the conversation
        history = USER + [{"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {
                "name": "get_weather", "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
        again = c.chat.completions.create(model="tiny", messages=history, tools=TOOLS,
                                          max_tokens=5)
        assert again.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_internlm2_tool_call_through_the_server(tok):
    import copy
    t = copy.copy(tok)  # same vocabulary, the InternLM2 template
    t._templates = {}
    t.chat_template = get_builtin_template("internlm2")
    reply = ('<|action_start|><|plugin|>\n{"name": "get_weather", "parameters": '
             '{"city": "Paris"}}<|action_end|>')
    with scripted_server(t, reply, USER, TOOLS) as (url, _):
        r = client(url).chat.completions.create(model="tiny", messages=USER, tools=TOOLS,
                                                max_tokens=60)
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        assert r.choices[0].finish_reason == "tool_calls"
