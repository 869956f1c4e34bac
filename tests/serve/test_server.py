"""The server through the official `openai` client: every endpoint, streaming, errors."""

import asyncio
import json
import time

import httpx
import openai
import pytest
import torch
from serve_helpers import client, running_server

from fullchain.checkpoint.pretrained import load_pretrained
from fullchain.engine import Engine
from fullchain.generate import SamplingParams as RefParams
from fullchain.generate import generate_text

MESSAGES = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": "the quick brown fox"}]


def reference_reply(model_dir, messages, max_tokens):
    model, tok = load_pretrained(model_dir)
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    params = RefParams(max_new_tokens=max_tokens, stop_token_ids=tok.stop_token_ids)
    return "".join(generate_text(model, tok, ids, params)), len(ids)


def test_models_health_and_greedy_chat(server, model_dir):
    url, _, _ = server
    c = client(url)
    assert [m.id for m in c.models.list().data] == ["tiny"]
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    want, prompt_len = reference_reply(model_dir, MESSAGES, 20)
    r = c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=20, temperature=0)
    assert r.choices[0].message.content == want
    assert r.usage.prompt_tokens == prompt_len
    assert r.usage.total_tokens == prompt_len + r.usage.completion_tokens
    r2 = c.chat.completions.create(model="tiny", messages=MESSAGES, max_completion_tokens=3,
                                   temperature=0)
    assert r2.usage.completion_tokens <= 3


def test_streaming_with_usage_equals_the_whole_reply(server, model_dir):
    url, _, _ = server
    want, prompt_len = reference_reply(model_dir, MESSAGES, 20)
    chunks = list(client(url).chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=20, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == want
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == prompt_len


def test_n_seed_stop_and_logprobs(server):
    url, _, _ = server
    c = client(url)
    kw = dict(model="tiny", messages=MESSAGES, max_tokens=12, temperature=1.0, seed=11, n=3)
    a, b = c.chat.completions.create(**kw), c.chat.completions.create(**kw)
    assert len(a.choices) == 3
    assert [x.message.content for x in a.choices] == [x.message.content for x in b.choices]
    r = c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0,
                                  logprobs=True, top_logprobs=2)
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens
    assert all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in entries)
    assert all(e.top_logprobs[0].logprob >= e.logprob - 1e-6 for e in entries)
    text = r.choices[0].message.content
    if len(text.strip()) > 2:
        stop = text.strip()[1:3]
        s = c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8,
                                      temperature=0, stop=[stop])
        assert stop not in s.choices[0].message.content
        assert s.choices[0].finish_reason == "stop"


def test_completions_echo_logprobs_equal_transformers(server, model_dir):
    transformers = pytest.importorskip("transformers")
    url, _, _ = server
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = [[5, 40, 77, 3, 120, 9, 11, 250, 33, 8, 70], [17, 18, 19, 20]]
    c = client(url)
    for max_tokens in (1, 0):
        r = c.completions.create(model="tiny", prompt=ids, max_tokens=max_tokens, echo=True,
                                 logprobs=1, temperature=0)
        assert [ch.index for ch in r.choices] == [0, 1]
        for prompt, choice in zip(ids, r.choices):
            lp = choice.logprobs
            assert len(lp.token_logprobs) == len(prompt) + max_tokens
            assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
            with torch.no_grad():
                ref = torch.log_softmax(hf(torch.tensor([prompt])).logits[0].float(), -1)
            for i in range(1, len(prompt)):
                assert abs(lp.token_logprobs[i] - float(ref[i - 1, prompt[i]])) <= 1e-3
                assert abs(max(lp.top_logprobs[i].values()) - float(ref[i - 1].max())) <= 1e-3
    text = c.completions.create(model="tiny", prompt="the quick", max_tokens=4, temperature=0)
    assert text.choices[0].finish_reason in ("length", "stop") and text.usage.prompt_tokens > 0


def test_streamed_multi_prompt_completions_equal_whole(server, tok):
    url, _, engine = server
    c = client(url)
    prompts = ["the quick brown fox", "over the lazy dog", "runs home to"]
    kw = dict(model="tiny", prompt=prompts, max_tokens=12, temperature=0, n=2)
    whole = c.completions.create(**kw)
    texts = {}
    reasons = {}
    for chunk in c.completions.create(stream=True, **kw):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    assert [ch.index for ch in whole.choices] == list(range(6))
    assert texts == {ch.index: ch.text for ch in whole.choices}
    assert reasons == {ch.index: ch.finish_reason for ch in whole.choices}
    assert len({whole.choices[i].text for i in (0, 2, 4)}) > 1  # the prompts differ
    ids = [tok.encode(p, add_special_tokens=True) for p in prompts]
    with pytest.raises(openai.BadRequestError, match=r"\[0, "):
        list(c.completions.create(model="tiny", prompt=[ids[0], [99999]], max_tokens=4,
                                  stream=True))
    for _ in range(200):  # the prompt that had started is aborted
        if not engine.seqs:
            break
        time.sleep(0.01)
    assert not engine.seqs


def test_tokenize_detokenize_and_tokenizer_info(server, tok):
    url, _, _ = server
    r = httpx.post(f"{url}/tokenize", json={"prompt": "the quick brown fox",
                                            "add_special_tokens": False}).json()
    assert r["tokens"] == tok.encode("the quick brown fox") and r["count"] == len(r["tokens"])
    assert r["max_model_len"] == 512
    m = httpx.post(f"{url}/tokenize", json={"messages": MESSAGES}).json()
    assert m["tokens"] == tok.apply_chat_template(MESSAGES, add_generation_prompt=True,
                                                  tokenize=True)
    d = httpx.post(f"{url}/detokenize", json={"tokens": r["tokens"]}).json()
    assert d == {"prompt": "the quick brown fox"}
    assert httpx.get(f"{url}/tokenizer_info").json()["eos_token"] == "<|endoftext|>"


def test_errors_have_the_openai_shape_and_status(server):
    url, _, _ = server
    c = client(url)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        c.chat.completions.create(model="gpt-9", messages=MESSAGES)
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": "nope"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        c.completions.create(model="tiny", prompt=[7] * 600, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        c.chat.completions.create(model="tiny", messages=MESSAGES, temperature=-1)
    with pytest.raises(openai.BadRequestError, match=r"\[0, "):
        c.completions.create(model="tiny", prompt=[99999], max_tokens=2)
    assert httpx.get(f"{url}/health").status_code == 200  # bad requests never kill it


def test_json_object_mode_gives_a_json_prefix(server):
    from fullchain.serve.json_mode import COMPLETE, INVALID, json_prefix_state
    url, _, _ = server
    r = client(url).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=40,
                                            temperature=0,
                                            response_format={"type": "json_object"})
    text = r.choices[0].message.content
    assert json_prefix_state(text) != INVALID
    if r.choices[0].finish_reason == "stop":
        assert json_prefix_state(text) == COMPLETE and isinstance(json.loads(text), dict)


def test_api_key_and_queue_limit(model_dir):
    engine = Engine.from_pretrained(model_dir)
    with running_server(engine, engine.tokenizer, api_key="sekret") as (url, _):
        with pytest.raises(openai.AuthenticationError):
            client(url, api_key="wrong").models.list()
        assert client(url, api_key="sekret").models.list().data[0].id == "tiny"
        assert httpx.get(f"{url}/health").status_code == 200  # open without the key
    with running_server(engine, engine.tokenizer, max_queued=0) as (url, _):
        with pytest.raises(openai.RateLimitError, match="queue is full"):
            client(url).chat.completions.create(model="tiny", messages=MESSAGES)


def test_disconnect_mid_stream_frees_blocks(server):
    url, async_engine, engine = server
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 400, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                break
        assert any(engine.kv.ref_count)  # the request holds blocks while streaming
    for _ in range(200):
        if not any(engine.kv.ref_count) and not engine.seqs:
            break
        time.sleep(0.05)
    assert not any(engine.kv.ref_count) and not engine.seqs


def test_mid_stream_failure_is_an_error_event_then_done(tok):
    from serve_helpers import ScriptedModel

    from fullchain.engine import EngineConfig
    prompt_len = len(tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True))
    script = tok.encode("the quick brown fox jumps")
    model = ScriptedModel(tok.vocab_size, script, prompt_len, fail_at=prompt_len + 2)
    engine = Engine(model, tok, EngineConfig(num_blocks=64, block_size=8))
    with running_server(engine, tok) as (url, _):
        stream = client(url).chat.completions.create(model="tiny", messages=MESSAGES,
                                                     max_tokens=10, stream=True)
        with pytest.raises(openai.APIError, match="engine failed"):
            for _ in stream:
                pass
        assert httpx.get(f"{url}/health").status_code == 200
    engine.kv.check_all_free()


@pytest.mark.slow
def test_64_concurrent_streaming_clients(server, tok):
    url, async_engine, engine = server
    prompts = [f"the quick brown fox number {i}" for i in range(64)]
    sync = Engine(engine.model, tok)
    from fullchain.engine import SamplingParams
    want = [o.outputs[0].text for o in sync.generate(
        [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                 tokenize=True) for p in prompts],
        SamplingParams(max_tokens=16))]
    before = async_engine.stats()["generation_tokens_total"]

    async def one(c, p):
        stream = await c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": p}], max_tokens=16,
            temperature=0, stream=True, stream_options={"include_usage": True})
        text, used = "", None
        async for ch in stream:
            if ch.choices:
                text += ch.choices[0].delta.content or ""
            if ch.usage:
                used = ch.usage.completion_tokens
        return text, used

    async def main():
        c = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)
        return await asyncio.gather(*(one(c, p) for p in prompts))

    got = asyncio.run(main())
    assert [t for t, _ in got] == want
    assert httpx.get(f"{url}/health").status_code == 200
    stats = async_engine.stats()
    assert stats["generation_tokens_total"] - before == sum(u for _, u in got)
    assert stats["running_requests"] == 0 and stats["queue_length"] == 0
    metrics = httpx.get(f"{url}/metrics").text
    assert "fullchain_kv_blocks_free" in metrics and "fullchain_prefix_cache_hit_rate" in metrics
    assert not any(engine.kv.ref_count)


def test_an_int8_kv_pool_serves_streamed_and_whole_replies_alike(model_dir):
    """`--kv-cache-dtype int8` behind the API: the streamed reply equals the whole one (the
    second request's prompt blocks come from the prefix cache of int8 rows), the pool holds
    the blocks the metrics report, and every block is free again after."""
    from serve_helpers import engine_config
    engine = Engine.from_pretrained(model_dir, engine_config(kv_cache_dtype="int8"))
    assert engine.runner.k_cache[0].dtype == torch.int8
    with running_server(engine, engine.tokenizer) as (url, _):
        c = client(url)
        whole = c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=20,
                                          temperature=0)
        text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=20, temperature=0, stream=True)
            if ch.choices)
        assert whole.usage.completion_tokens > 0 and text == whole.choices[0].message.content
        metrics = httpx.get(f"{url}/metrics").text
        free = next(float(line.split()[-1]) for line in metrics.splitlines()
                    if line.startswith("fullchain_kv_blocks_free"))
        assert free == engine.kv.num_free == engine.kv.num_blocks  # cached prefixes: evictable
    assert not any(engine.kv.ref_count) and not engine.seqs
