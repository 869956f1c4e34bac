"""Chat rendering equals transformers' apply_chat_template; the loss mask covers replies."""

from __future__ import annotations

import copy

import pytest

from fullchain.config import TokenizerError
from fullchain.tokenizer import BUILTIN_TEMPLATES, Tokenizer, get_builtin_template

transformers = pytest.importorskip("transformers")

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city / 城市天气",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}]

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And in Chinese? 中文"},
    {"role": "assistant", "content": "四。😀"},
]

TOOL_CHAT = [
    {"role": "system", "content": "You can call tools."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
    }]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    {"role": "assistant", "content": "It is 21°C in Paris."},
]

# What the loss mask must cover, per template: each assistant reply and its end-of-turn token.
EXPECTED_REPLIES = {
    "chatml": (
        ["4.<|im_end|>", "四。😀<|im_end|>"],
        ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
         "<|im_end|>", "It is 21°C in Paris.<|im_end|>"],
    ),
    "internlm2": (
        ["4.<|im_end|>", "四。😀<|im_end|>"],
        ['<|action_start|><|plugin|>\n{"name": "get_weather", "parameters": {"city": "Paris"}}'
         "<|action_end|><|im_end|>", "It is 21°C in Paris.<|im_end|>"],
    ),
    "llama3": (
        ["4.<|eot_id|>", "四。😀<|eot_id|>"],
        ['{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>',
         "It is 21°C in Paris.<|eot_id|>"],
    ),
}

# InternLM2.5's stock template: it writes {{ bos_token }} itself.
BOS_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def with_template(tok: Tokenizer, source: str, folder) -> tuple[Tokenizer, object]:
    """Our tokenizer with `source` as its template, and transformers' load of its saved copy."""
    tok = copy.deepcopy(tok)
    tok.chat_template = source
    tok.save(folder)
    return Tokenizer.from_dir(folder), transformers.AutoTokenizer.from_pretrained(folder)


def masked_runs(ids: list[int], mask: list[int], tok: Tokenizer) -> list[str]:
    runs, current = [], []
    for token, bit in zip(ids, mask):
        if bit:
            current.append(token)
        elif current:
            runs.append(tok.decode(current))
            current = []
    return runs + ([tok.decode(current)] if current else [])


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_builtin_templates_match_transformers(bpe, tmp_path, name):
    tok, hf = with_template(bpe, get_builtin_template(name), tmp_path)
    cases = [(CHAT, None), (TOOL_CHAT, TOOLS), (CHAT[:2], TOOLS), (TOOL_CHAT[1:], TOOLS)]
    for messages, tools in cases:
        for prompt in (False, True):
            ours = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=prompt)
            theirs = hf.apply_chat_template(messages, tools=tools, add_generation_prompt=prompt,
                                            tokenize=False)
            assert ours == theirs
            ids = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=prompt,
                                          tokenize=True)
            assert ids == hf.apply_chat_template(messages, tools=tools, tokenize=True,
                                                 add_generation_prompt=prompt, return_dict=False)
            assert ids.count(tok.bos_token_id) == ours.count(tok.bos_token)  # never doubled


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_builtin_template_tool_arguments_as_json_string(bpe, name):
    tok = copy.deepcopy(bpe)
    tok.chat_template = get_builtin_template(name)
    as_string = copy.deepcopy(TOOL_CHAT)
    as_string[2]["tool_calls"][0]["function"]["arguments"] = '{"city": "Paris"}'
    assert tok.apply_chat_template(as_string, tools=TOOLS) == tok.apply_chat_template(
        TOOL_CHAT, tools=TOOLS)


def test_template_with_bos_token_has_one_bos(bpe, tmp_path):
    tok, hf = with_template(bpe, BOS_TEMPLATE, tmp_path)
    text = tok.apply_chat_template(CHAT, add_generation_prompt=True)
    assert text.startswith("<|begin_of_text|><|im_start|>system\n")
    assert text == hf.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    ids = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)
    assert ids == hf.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=False)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    ids_again, mask = tok.render_conversation(CHAT)
    assert ids_again == tok.apply_chat_template(CHAT, tokenize=True)
    assert masked_runs(ids_again, mask, tok) == ["4.<|im_end|>", "四。😀<|im_end|>"]


def test_transformers_environment_features(bpe, tmp_path):
    source = (
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% if m.role == 'skip' %}"
        "{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}{% generation %}{{ m.content }}"
        "{% endgeneration %}|{{ {'k': m.content} | tojson(indent=2, sort_keys=True) }}\n"
        "{% endfor %}{{ ns.n }}{{ extra_var }}{{ eos_token }}{{ pad_token }}"
    )
    tok, hf = with_template(bpe, source, tmp_path)
    messages = [{"role": "user", "content": "<b>&\"中\"</b>"}, {"role": "skip", "content": "x"}]
    ours = tok.apply_chat_template(messages, extra_var="!")
    assert ours == hf.apply_chat_template(messages, extra_var="!", tokenize=False)
    assert '"<b>&\\"中\\"</b>"' in ours and ours.endswith("1!<|endoftext|><|endoftext|>")


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_loss_mask_covers_exactly_assistant_replies(bpe, name):
    tok = copy.deepcopy(bpe)
    tok.chat_template = get_builtin_template(name)
    for (messages, tools), expected in zip([(CHAT, None), (TOOL_CHAT, TOOLS)],
                                           EXPECTED_REPLIES[name]):
        ids, mask = tok.render_conversation(messages, tools=tools)
        assert ids == tok.apply_chat_template(messages, tools=tools, tokenize=True)
        assert len(mask) == len(ids) and set(mask) <= {0, 1}
        assert masked_runs(ids, mask, tok) == expected
        unmasked = tok.decode([t for t, bit in zip(ids, mask) if not bit])
        assert "4." not in unmasked and "Paris." not in unmasked and "四" not in unmasked


def test_loss_mask_with_sentencepiece(sp_dir):
    tok = Tokenizer.from_dir(sp_dir)
    tok.chat_template = get_builtin_template("internlm2")
    ids, mask = tok.render_conversation(CHAT)
    assert ids == tok.apply_chat_template(CHAT, tokenize=True)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert masked_runs(ids, mask, tok) == ["4.<|im_end|>", "四。😀<|im_end|>"]


def test_not_prefix_stable_template_is_refused(bpe):
    tok = copy.deepcopy(bpe)
    tok.chat_template = ("{% for m in messages %}{% if loop.last %}LAST {% endif %}"
                         "{{ m.content }}<|im_end|>{% endfor %}")
    with pytest.raises(TokenizerError, match="prefix-stable"):
        tok.render_conversation(CHAT)


def test_chat_errors_are_tokenizer_errors(bpe):
    tok = copy.deepcopy(bpe)
    tok.chat_template = None
    with pytest.raises(TokenizerError, match="get_builtin_template"):
        tok.apply_chat_template(CHAT)
    tok.chat_template = get_builtin_template("llama3")
    two_calls = copy.deepcopy(TOOL_CHAT)
    two_calls[2]["tool_calls"] *= 2
    with pytest.raises(TokenizerError, match="one tool call"):
        tok.apply_chat_template(two_calls, tools=TOOLS)
    with pytest.raises(TokenizerError, match="empty"):
        tok.apply_chat_template([])
    with pytest.raises(TokenizerError, match="unknown builtin"):
        get_builtin_template("vicuna")
