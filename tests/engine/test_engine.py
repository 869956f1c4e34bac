"""The engine against the reference loop: greedy outputs equal token for token, whatever the
batch, the arrival step, the prefix cache and preemption."""

import copy
import random

import pytest
import torch

from fullchain.engine import Engine, EngineConfig, RequestError, SamplingParams
from fullchain.engine import engine as engine_module
from fullchain.generate import SamplingParams as RefParams
from fullchain.generate import generate_ids

CONFIGS = {
    "prefix-cache": EngineConfig(num_blocks=96, block_size=4, max_num_batched_tokens=24),
    "no-prefix-cache": EngineConfig(num_blocks=96, block_size=4, max_num_batched_tokens=24,
                                    enable_prefix_caching=False),
    "forced-preemption": EngineConfig(num_blocks=26, block_size=4, max_num_batched_tokens=24),
}


def reference(model, prompt, max_new_tokens, stop_ids=()):
    return list(generate_ids(model, prompt, RefParams(max_new_tokens=max_new_tokens,
                                                      stop_token_ids=stop_ids)))


def staggered_run(engine, prompts, params, arrivals):
    """Add prompt i at step arrivals[i]; step until all finish; output ids per prompt."""
    out, rids, step = {}, {}, 0
    while len(rids) < len(prompts) or engine.has_work():
        for i, a in enumerate(arrivals):
            if a == step:
                rids[engine.add_request(prompts[i], params)] = i
        for o in engine.step():
            out.setdefault(rids[o.request_id], []).extend(o.token_ids)
        step += 1
        assert step < 5000
    return [out[i] for i in range(len(prompts))]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_equals_reference_with_staggered_arrivals(name, tiny_model):
    rng = random.Random(1)
    shared = [rng.randrange(300) for _ in range(13)]  # a common prefix (3 full blocks + 1)
    prompts = [shared + [rng.randrange(300) for _ in range(rng.randrange(0, 40))]
               for _ in range(5)]
    prompts += [[rng.randrange(300) for _ in range(rng.randrange(1, 50))] for _ in range(5)]
    arrivals = [rng.randrange(0, 12) for _ in prompts]
    engine = Engine(tiny_model, None, CONFIGS[name])
    got = staggered_run(engine, prompts, SamplingParams(max_tokens=24), arrivals)
    for prompt, ids in zip(prompts, got):
        assert ids == reference(tiny_model, prompt, 24)
    engine.kv.check_all_free()
    if name == "forced-preemption":
        assert engine.scheduler.num_preemptions > 0
    if name == "prefix-cache":
        assert engine.kv.hits > 0


def test_prefix_cache_hits_reuse_blocks_and_keep_outputs(tiny_model):
    engine = Engine(tiny_model, None, EngineConfig(num_blocks=64, block_size=4))
    prompt = list(range(1, 30))
    first = engine.generate([prompt], SamplingParams(max_tokens=8))[0]
    second = engine.generate([prompt], SamplingParams(max_tokens=8))[0]
    assert first.num_cached_tokens == 0 and second.num_cached_tokens == 28
    assert first.outputs[0].token_ids == second.outputs[0].token_ids
    assert second.outputs[0].token_ids == reference(tiny_model, prompt, 8)


def test_seeded_sampling_equals_reference_and_n_choices_differ(tiny_model):
    prompt = [5, 17, 33, 2, 250]
    params = SamplingParams(max_tokens=12, temperature=0.9, top_k=40, top_p=0.9, seed=7, n=3)
    engine = Engine(tiny_model, None, EngineConfig(num_blocks=64, block_size=4))
    out = engine.generate([prompt], params)[0]
    ref = list(generate_ids(tiny_model, prompt, RefParams(max_new_tokens=12, temperature=0.9,
                                                           top_k=40, top_p=0.9, seed=7)))
    assert out.outputs[0].token_ids == ref
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1
    again = engine.generate([prompt], params)[0]
    assert [c.token_ids for c in again.outputs] == [c.token_ids for c in out.outputs]


def test_stop_ids_stop_strings_and_text(tiny_model, tiny_tok):
    engine = Engine(tiny_model, tiny_tok, EngineConfig(num_blocks=64, block_size=4))
    prompt = tiny_tok.encode("the quick brown fox")
    full = engine.generate([prompt], SamplingParams(max_tokens=30, ignore_eos=True))[0].outputs[0]
    assert full.text == tiny_tok.decode(full.token_ids, skip_special_tokens=True)
    stop_id = full.token_ids[5]
    cut = engine.generate([prompt], SamplingParams(max_tokens=30, ignore_eos=True,
                                                   stop_token_ids=[stop_id]))[0].outputs[0]
    first = full.token_ids.index(stop_id)
    assert cut.token_ids == full.token_ids[:first + 1]
    assert (cut.finish_reason, cut.stop_reason) == ("stop", stop_id)
    word = full.text.strip().split()[-1] if full.text.strip() else None
    if word:
        s = engine.generate([prompt], SamplingParams(max_tokens=30, ignore_eos=True,
                                                     stop=[word]))[0].outputs[0]
        assert s.text == full.text[:full.text.index(word)]
        assert s.stop_reason == word
    engine.kv.check_all_free()


@pytest.mark.parametrize("budget", [4, 64])  # the prompt in chunks of 4 (after the first,
# attention over the pool's earlier keys with a mask), or in one causal chunk
def test_logprobs_and_prompt_logprobs_match_a_full_forward(tiny_model, budget):
    prompt = [3, 99, 41, 7, 250, 18, 64, 11, 120]
    engine = Engine(tiny_model, None, EngineConfig(num_blocks=64, block_size=4,
                                                   max_num_batched_tokens=budget))
    out = engine.generate([prompt], SamplingParams(max_tokens=4, logprobs=3,
                                                   prompt_logprobs=2))[0]
    ids = prompt + out.outputs[0].token_ids
    with torch.no_grad():
        full = torch.log_softmax(tiny_model(torch.tensor([ids]))[0].float(), dim=-1)
    assert out.prompt_logprobs[0] is None
    for i in range(1, len(prompt)):
        lp, top = out.prompt_logprobs[i]
        assert abs(lp - float(full[i - 1, prompt[i]])) < 1e-4
        assert len(top) == 2 and top[0][0] == int(full[i - 1].argmax())
    for j, (lp, top) in enumerate(out.outputs[0].logprobs):
        pos = len(prompt) + j - 1
        assert abs(lp - float(full[pos, ids[pos + 1]])) < 1e-4
        assert len(top) == 3 and top[0][0] == ids[pos + 1]  # greedy picks the top one


def test_score_sums_continuation_logprobs_and_shares_the_context(tiny_model):
    ctx = list(range(10, 40))
    conts = [[5, 6], [7], [8, 9, 10]]
    engine = Engine(tiny_model, None, EngineConfig(num_blocks=64, block_size=4))
    scores = engine.score([(ctx, c) for c in conts])
    for c, (total, greedy) in zip(conts, scores):
        ids = ctx + c
        with torch.no_grad():
            lp = torch.log_softmax(tiny_model(torch.tensor([ids]))[0].float(), dim=-1)
        want = sum(float(lp[len(ctx) + i - 1, t]) for i, t in enumerate(c))
        assert abs(total - want) < 1e-3
        assert greedy == all(int(lp[len(ctx) + i - 1].argmax()) == t for i, t in enumerate(c))
    assert engine.kv.hits > 0  # the later contexts came from the prefix cache
    engine.kv.check_all_free()


def test_bad_requests_name_the_fix(tiny_model):
    engine = Engine(tiny_model, None, EngineConfig(num_blocks=8, block_size=4, max_model_len=64))
    with pytest.raises(RequestError, match="empty"):
        engine.add_request([])
    with pytest.raises(RequestError, match="context holds 64"):
        engine.add_request(list(range(70)))
    with pytest.raises(RequestError, match="num_blocks"):
        engine.add_request([1, 2, 3], SamplingParams(max_tokens=40))
    with pytest.raises(RequestError, match=r"\[0, 300\)"):
        engine.add_request([1, 2, 999])
    assert not engine.has_work()


@pytest.mark.slow
def test_compiled_decode_equals_reference(tiny_model):
    """`compile_decode` runs decode-only steps through torch.compile (dynamic shapes): the
    same greedy tokens as the reference loop. (Where the CPU kernels are built, decode steps
    take the fused layers instead, so they are turned off here.)"""
    rng = random.Random(2)
    prompts = [[rng.randrange(300) for _ in range(rng.randrange(1, 30))] for _ in range(4)]
    engine = Engine(tiny_model, None, EngineConfig(num_blocks=96, block_size=4,
                                                   max_num_batched_tokens=24,
                                                   compile_decode=True, decode_kernel=False))
    got = staggered_run(engine, prompts, SamplingParams(max_tokens=12), [0, 0, 3, 5])
    for prompt, ids in zip(prompts, got):
        assert ids == reference(tiny_model, prompt, 12)
    engine.kv.check_all_free()


@pytest.mark.parametrize("keep", [True, False])
def test_cpu_engine_keeps_freed_memory_unless_told_not_to(tiny_model, monkeypatch, keep):
    calls = []
    monkeypatch.setattr(engine_module, "keep_freed_memory", lambda: calls.append(1) or True)
    Engine(tiny_model, None, EngineConfig(num_blocks=8, keep_freed_memory=keep))
    assert calls == ([1] if keep else [])


@pytest.mark.parametrize("huge", [True, False])
def test_huge_pages_hold_weights_and_pool_and_change_no_output(tiny_model, huge):
    from fullchain.model.memory import huge_page_buffer
    rng = random.Random(3)
    prompts = [[rng.randrange(300) for _ in range(rng.randrange(1, 30))] for _ in range(4)]
    model = copy.deepcopy(tiny_model)  # its weights are moved: the shared one stays as it is
    embed = model.model.embed_tokens.weight  # the one weight over 64 KB
    engine = Engine(model, None, EngineConfig(num_blocks=96, block_size=4,
                                              max_num_batched_tokens=24, huge_pages=huge))
    pools = [*engine.runner.k_cache, *engine.runner.v_cache]
    assert all(p.is_contiguous() and int(p.abs().max()) == 0 for p in pools)
    one_buffer = len({p.untyped_storage().data_ptr() for p in pools}) == 1
    assert one_buffer == huge
    aligned = huge_page_buffer(1).data_ptr() % (2 << 20) == 0  # where mmap gives huge pages
    assert (embed.data_ptr() % (2 << 20) == 0) == (huge and aligned)
    got = staggered_run(engine, prompts, SamplingParams(max_tokens=10), [0, 1, 1, 4])
    for prompt, ids in zip(prompts, got):
        assert ids == reference(tiny_model, prompt, 10)
    engine.kv.check_all_free()
