"""LocalLLM (the engine in process) and OpenAILLM (the same tiny model behind `fullchain serve`)
answer alike: greedy chat and completions give the same text, scores agree with each other and
with a log-softmax computed directly on the model."""

import json

import pytest
import torch
from serve_helpers import ScriptedModel, engine_config, running_server

from fullchain.checkpoint.pretrained import load_pretrained
from fullchain.engine import Engine, EngineConfig
from fullchain.llm import LLM, GenParams, LocalLLM, OpenAILLM, load_llm

MESSAGES = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": "the quick brown fox"}]
PROMPTS = ["the quick brown fox number 3", "the lazy dog and runs", "over the"]
PAIRS = [("the quick brown fox", " jumps over the lazy dog"),
         ("the quick brown fox number 1", "2 jumps"),
         ("the lazy dog and runs home to", " 14"),
         ("the quick brown fox number", " 5 jumps over")]


@pytest.fixture(scope="module")
def both(model_dir, server_url):
    local = LocalLLM.from_pretrained(model_dir, engine_config())
    with OpenAILLM(server_url) as remote:
        yield local, remote


def test_both_are_llms_and_the_server_names_the_model(both):
    local, remote = both
    assert isinstance(local, LLM) and isinstance(remote, LLM)
    assert remote.model == "tiny" and local.model == "tiny"


def test_greedy_chat_gives_the_same_reply(both):
    local, remote = both
    params = GenParams(max_tokens=16)
    a, b = local.chat(MESSAGES, params=params), remote.chat(MESSAGES, params=params)
    assert a.text  # else the comparison proves little
    assert (a.text, a.finish_reason, a.tool_calls) == (b.text, b.finish_reason, b.tool_calls)
    assert a.usage == b.usage and a.usage.completion_tokens <= 16


def test_greedy_complete_gives_the_same_text_and_logprobs(both):
    local, remote = both
    params = GenParams(max_tokens=8, logprobs=True)
    a, b = local.complete(PROMPTS, params), remote.complete(PROMPTS, params)
    assert [c.text for c in a] == [c.text for c in b] and all(c.text for c in a)
    for x, y in zip(a, b):
        assert (x.finish_reason, x.prompt_tokens, x.completion_tokens) == (
            y.finish_reason, y.prompt_tokens, y.completion_tokens)
        assert len(x.logprobs) == x.completion_tokens
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-3)
    stopped = local.complete(PROMPTS[:1], GenParams(max_tokens=8, stop=[a[0].text[2:5]]))
    assert stopped[0].finish_reason == "stop" and len(stopped[0].text) <= 2


def direct_score(model, tok, context: str, continuation: str) -> tuple[float, bool]:
    ids = tok.encode(context + continuation, add_special_tokens=True)
    n = len(tok.encode(context, add_special_tokens=True))
    assert ids[:n] == tok.encode(context, add_special_tokens=True)  # a clean token boundary
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids]))[0].float(), -1)
    chosen = [float(logp[i - 1, ids[i]]) for i in range(n, len(ids))]
    return sum(chosen), all(int(logp[i - 1].argmax()) == ids[i] for i in range(n, len(ids)))


def test_score_agrees_with_a_direct_log_softmax(both, model_dir):
    local, remote = both
    # the model's own greedy continuation (the random model often writes partial UTF-8 bytes,
    # whose text does not tokenize back to the same ids: take the first ASCII one)
    texts = local.complete(PROMPTS + ["the quick", "runs home to"], GenParams(max_tokens=3))
    greedy = next((p, c.text) for p, c in zip(PROMPTS + ["the quick", "runs home to"], texts)
                  if c.text.isascii() and c.text.strip())
    pairs = [*PAIRS, greedy]
    a, b = local.score(pairs), remote.score(pairs)
    model, tok = load_pretrained(model_dir)
    for pair, (lp_a, greedy_a), (lp_b, greedy_b) in zip(pairs, a, b):
        want, want_greedy = direct_score(model, tok, *pair)
        assert lp_a == pytest.approx(want, abs=1e-3), pair
        assert lp_b == pytest.approx(want, abs=1e-3), pair
        assert greedy_a == greedy_b == want_greedy, pair
    assert a[-1][1] is True
    assert not all(g for _, g in a)


def test_a_straddling_token_belongs_to_the_continuation(both):
    """'fox' + 'es' style splits: the continuation's first characters share a token with the
    context's end; both sides cut at the same token and agree."""
    local, remote = both
    pairs = [("the quick bro", "wn fox"), ("the quick brown fox number 4", "2")]
    for (lp_a, g_a), (lp_b, g_b) in zip(local.score(pairs), remote.score(pairs)):
        assert lp_a == pytest.approx(lp_b, abs=1e-3) and g_a == g_b and lp_a < 0


def test_load_llm_picks_the_implementation(model_dir, server_url, tmp_path):
    assert isinstance(load_llm(model_dir, device="cpu"), LocalLLM)
    remote = load_llm(server_url, model="tiny")
    assert isinstance(remote, OpenAILLM) and remote.model == "tiny"
    from fullchain.config import LLMError
    with pytest.raises(LLMError, match="neither an http"):
        load_llm(tmp_path / "nope")


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
USER = [{"role": "user", "content": "weather in Paris?"}]
HERMES_REPLY = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                '</tool_call>')


def test_tool_calls_come_back_parsed_through_both(tok):
    prompt = tok.apply_chat_template(USER, tools=TOOLS, add_generation_prompt=True,
                                     tokenize=True)
    script = tok.encode(HERMES_REPLY) + [tok.token_to_id("<|im_end|>")]

    def scripted() -> Engine:
        return Engine(ScriptedModel(tok.vocab_size, script, len(prompt)), tok,
                      EngineConfig(num_blocks=128, block_size=8))

    local = LocalLLM(scripted(), model="tiny")
    with running_server(scripted(), tok) as (url, _), OpenAILLM(f"{url}/v1") as remote:
        results = [llm.chat(USER, tools=TOOLS, params=GenParams(max_tokens=60))
                   for llm in (local, remote)]
    for r in results:
        assert r.finish_reason == "tool_calls" and r.text == ""
        assert [c.name for c in r.tool_calls] == ["get_weather"]
        assert json.loads(r.tool_calls[0].arguments) == {"city": "Paris"}
