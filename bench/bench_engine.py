"""The serving engine vs transformers' `generate`, same weights, dtype and process; ratios printed.

- batch-1 decode tokens/s, vs transformers and vs the memory-bandwidth floor (weight bytes per
  token / read bandwidth measured just before and after each decode, the mean of the two), in
  rounds (medians printed with every round's figure);
- the same decode step by step, each step right after a plain read of the bytes it reads (its
  share of the floor taken step by step: the two timings milliseconds apart, not a minute);
- throughput of R concurrent requests (prompt P, output O tokens) vs transformers' batched
  `generate` on the same prompts;
- decode steps alone for 16 sequences whose prompts are cached (llama-batched-bench's S_TG;
  the issue's 291-397 tokens/s is its S column, prompt and generated tokens together);
- the same for 16 sequences of 1024-token prompts (`--long-prompt`), where the decode attention
  over the paged pool takes most of a step;
- time to first token of a request whose 1k-token prefix is / is not in the prefix cache;
- llama.cpp on the same weights (written as GGUF of the run's dtype, and q8_0 with
  `--quantize int8`; `bench/llama_cpp_peer.py`) beside the engine in each of these: its batch-1
  decode in every round, the R requests, and the 16 sequences at both prompt lengths, with its
  f16 KV cache (q8_0 against `--kv-cache-dtype int8`); left out without llama-cpp-python or
  with `--no-llama-cpp`.

    .venv/bin/python bench/bench_engine.py [--model smollm2-135m|tiny] [--dtype float32]
        [--requests 32 --prompt 256 --output 128] [--decode-tokens 64] [--rounds 3]
        [--quantize int8] [--kv-cache-dtype bfloat16] [--long-prompt 1024] [--no-llama-cpp]

Figures are printed, not asserted: on a shared machine they drift with the load.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import llama_cpp_peer  # noqa: E402
from common import print_table, spread, timed  # noqa: E402
from llama_cpp_peer import LlamaCpp  # noqa: E402

from fullchain.checkpoint import config_to_hf  # noqa: E402
from fullchain.engine import Engine, EngineConfig, SamplingParams  # noqa: E402
from fullchain.engine.kernels import weight_bytes  # noqa: E402
from fullchain.model import Transformer, preset  # noqa: E402
from fullchain.model.memory import huge_page_buffer  # noqa: E402


def read_seconds(buffer: torch.Tensor, repeats: int) -> float:
    """The fastest of `repeats` plain reads (a sum) of `buffer`."""
    return min(timed(buffer.sum) for _ in range(repeats))


def read_buffer(num_bytes: int) -> torch.Tensor:
    """fp32 ones the size of the weights, in memory like the engine's weights (huge pages where
    the kernel gives them: a plain read of them was 0-15% faster than of 4 KB pages here, in 5
    scratch runs)."""
    return huge_page_buffer(num_bytes // 4 * 4).view(torch.float32).fill_(1.0)


def read_bandwidth(num_bytes: int, repeats: int = 5) -> float:
    """Bytes/s of a plain read (a sum) over a buffer the size of the weights."""
    x = read_buffer(num_bytes)
    x.sum()
    return num_bytes / read_seconds(x, repeats)


def bandwidth_around(fn, num_bytes: int):
    """fn()'s result and the read bandwidth around it: the mean of a measurement just before
    and one just after (this VM's bandwidth moves by ±30% from minute to minute)."""
    before = read_bandwidth(num_bytes)
    result = fn()
    return result, (before + read_bandwidth(num_bytes)) / 2


def build(name: str, dtype: torch.dtype):
    import transformers
    cfg = preset(name)
    ours = Transformer(cfg)
    ours.init_weights(seed=0)
    ours = ours.to(dtype).eval()
    hf_cfg = transformers.AutoConfig.for_model(**config_to_hf(cfg))
    hf_cfg._attn_implementation = "sdpa"
    theirs = transformers.AutoModelForCausalLM.from_config(hf_cfg).to(dtype).eval()
    theirs.load_state_dict(ours.state_dict(), strict=False)
    return ours, theirs


def hf_generate(model, ids: torch.Tensor, new_tokens: int) -> float:
    with torch.no_grad():
        return timed(lambda: model.generate(ids, attention_mask=torch.ones_like(ids),
                                             max_new_tokens=new_tokens,
                                             min_new_tokens=new_tokens, do_sample=False,
                                             pad_token_id=0))


def engine_generate(engine: Engine, prompts: list[list[int]], new_tokens: int) -> float:
    params = SamplingParams(max_tokens=new_tokens, ignore_eos=True)
    return timed(lambda: engine.generate(prompts, params))


def read_bytes(model: torch.nn.Module) -> int:
    """The bytes of weights a decoded token reads: every parameter and buffer, except an
    embedding table that is not also the LM head (one row of it is read)."""
    head, lookup = model.lm_head, model.model.embed_tokens
    shared = {id(t) for t in [*head.parameters(), *head.buffers()]}
    unread = [t for t in [*lookup.parameters(), *lookup.buffers()] if id(t) not in shared]
    return weight_bytes(model) - sum(t.numel() * t.element_size() for t in unread)


def decode_rates(ours, theirs, vocab: int, n: int, rounds: int, *, compile: bool = False,
                 quantize: str | None = None,
                 peers: dict[str, tuple[Path, float]] | None = None) -> dict[str, list[float]]:
    """Batch-1 decode in `rounds` rounds. Each round measures the tokens/s ((n - 1) / (time for
    n tokens - time for 1 token)) of the engine (its CPU kernels), the engine on PyTorch's
    operators, with ``compile`` the latter with ``compile_decode`` (its compilation is not
    timed), with ``quantize`` the engine on a copy of the model quantised so, and transformers'
    `generate`; each rate is also kept as a share of its floor (the bytes that engine's model
    reads per token over the read bandwidth, the mean of a measurement just before and one just
    after that decode), so that the machine's drift (±30% here, from minute to minute) does not
    land in the ratios. Each engine is built just before it runs: building one re-lays the
    shared model's weights for it. Returns {name: [per-round values]}, with "floor" (tokens/s,
    the model as given, from the bandwidth around the first engine's decode), and "<name> share"
    (of its floor) and "<name> vs transformers" entries. `peers` ({name: (GGUF file, bytes
    read per token)}) adds llama.cpp's batch-1 decode of those files to every round, measured
    the same way."""
    prompt = torch.randint(0, vocab, (1, 32))
    configs = {"engine": (ours, EngineConfig(max_num_seqs=4)),
               "engine, PyTorch operators": (ours, EngineConfig(max_num_seqs=4,
                                                                decode_kernel=False))}
    if compile:
        configs["engine, PyTorch operators, compiled"] = (ours, EngineConfig(
            max_num_seqs=4, decode_kernel=False, compile_decode=True))
    if quantize:
        configs[f"engine, {quantize} weights"] = (copy.deepcopy(ours), EngineConfig(
            max_num_seqs=4, quantization=quantize))
    weight_bytes = read_bytes(ours)
    out: dict[str, list[float]] = {}
    for _ in range(rounds):
        rates, floors = {}, {}
        for name, (model, config) in configs.items():
            engine = Engine(model, None, config)
            engine_generate(engine, [prompt[0].tolist()], n)  # warm-up: every shape compiled
            e, bandwidth = bandwidth_around(
                lambda e=engine: [engine_generate(e, [prompt[0].tolist()], k) for k in (1, n)],
                weight_bytes)
            rates[name] = (n - 1) / (e[1] - e[0])
            floors[name] = bandwidth / read_bytes(model)
        for name, (path, peer_bytes) in (peers or {}).items():
            peer = LlamaCpp(path, threads=torch.get_num_threads(), sequences=1, context=n + 64)
            llama_cpp_peer.batch1_decode(peer, prompt[0].tolist(), 4)  # warm-up
            rate, bandwidth = bandwidth_around(
                lambda p=peer: llama_cpp_peer.batch1_decode(p, prompt[0].tolist(), n - 1),
                weight_bytes)
            peer.close()
            rates[name], floors[name] = rate, bandwidth / peer_bytes
        hf_generate(theirs, prompt, 4)
        h, bandwidth = bandwidth_around(lambda: [hf_generate(theirs, prompt, k) for k in (1, n)],
                                        weight_bytes)
        rates["transformers"] = (n - 1) / (h[1] - h[0])
        floors["transformers"] = bandwidth / weight_bytes
        for name, rate in rates.items():
            out.setdefault(name, []).append(rate)
            out.setdefault(f"{name} share", []).append(rate / floors[name])
            out.setdefault(f"{name} vs transformers", []).append(rate / rates["transformers"])
            out.setdefault(f"{name} floor", []).append(floors[name])
        out.setdefault("floor", []).append(floors["engine"])  # the model as given
    return out


def paired_steps(model, vocab: int, n: int, rounds: int) -> dict[str, list[float]]:
    """Batch-1 decode of the engine (its CPU kernels) step by step, each step timed right after
    the faster of two plain reads of the bytes the model reads per token, so that the step's
    share of its floor (read time over step time) compares two moments a few milliseconds apart.
    A step is the engine's whole step (schedule, model, sampling). Per round the medians over
    `n` steps: {"tok/s": [...], "share": [...], "GB/s": [...]}."""
    engine = Engine(model, None, EngineConfig(max_num_seqs=4))
    prompt = torch.randint(0, vocab, (32,)).tolist()
    engine_generate(engine, [prompt], 4)  # warm-up
    num_bytes = read_bytes(model)
    buffer = read_buffer(num_bytes)
    buffer.sum()
    out: dict[str, list[float]] = {"tok/s": [], "share": [], "GB/s": []}
    for _ in range(rounds):
        engine.add_request(prompt, SamplingParams(max_tokens=n + 1, ignore_eos=True))
        engine.step()  # the prompt and the first token
        reads, steps = [], []
        while engine.has_work():
            reads.append(read_seconds(buffer, 2))
            steps.append(timed(engine.step))
        out["tok/s"].append(1 / statistics.median(steps))
        out["share"].append(statistics.median(r / s for r, s in zip(reads, steps)))
        out["GB/s"].append(num_bytes / statistics.median(reads) / 1e9)
    return out


def throughput(ours, theirs, vocab: int, requests: int, prompt_len: int, out: int,
               kv_cache_dtype: str = "auto", peer: Path | None = None) -> dict:
    prompts = torch.randint(0, vocab, (requests, prompt_len))
    engine = Engine(ours, None, EngineConfig(max_num_seqs=requests,
                                             max_num_batched_tokens=2048,
                                             enable_prefix_caching=False,
                                             kv_cache_dtype=kv_cache_dtype))
    t_engine = engine_generate(engine, prompts.tolist(), out)
    t_hf = hf_generate(theirs, prompts, out)
    t_hf_prefill = hf_generate(theirs, prompts, 1)  # the prompts and one token
    tokens = requests * out
    result = {"engine": tokens / t_engine, "transformers": tokens / t_hf,
              "transformers prefill s": t_hf_prefill, "transformers s": t_hf}
    if peer is not None:
        llama = LlamaCpp(peer, threads=torch.get_num_threads(), sequences=requests,
                         context=prompt_len + out, kv=_peer_kv(kv_cache_dtype))
        result["llama.cpp"] = llama_cpp_peer.serve(llama, prompts.tolist(), out)
        llama.close()
    return result


def _peer_kv(kv_cache_dtype: str) -> str:
    """llama.cpp's KV cache type nearest to the engine's pool: its q8_0 for an int8 pool, else
    its default f16."""
    return "q8_0" if kv_cache_dtype == "int8" else "f16"


def decode_steps(ours, vocab: int, sequences: int, prompt_len: int, out: int,
                 kv_cache_dtype: str = "auto", peer: Path | None = None) -> dict[str, float]:
    """tokens/s of decode steps alone for `sequences` sequences at once (llama.cpp's
    batched-bench figure): the prompts are cached first, and the run of one new token (which
    recomputes each prompt's last block) is taken off the run of out + 1. With `peer`, llama.cpp
    on that GGUF file decodes the same prompts' sequences too."""
    prompts = torch.randint(0, vocab, (sequences, prompt_len)).tolist()
    engine = Engine(ours, None, EngineConfig(max_num_seqs=sequences, max_num_batched_tokens=2048,
                                             kv_cache_dtype=kv_cache_dtype, kv_cache_gb=2.0))
    engine_generate(engine, prompts, 1)  # the prompts' blocks into the prefix cache
    one = engine_generate(engine, prompts, 1)
    result = {"engine": sequences * out / (engine_generate(engine, prompts, out + 1) - one)}
    del engine
    if peer is not None:
        llama = LlamaCpp(peer, threads=torch.get_num_threads(), sequences=sequences,
                         context=prompt_len + out + 1, kv=_peer_kv(kv_cache_dtype))
        result["llama.cpp"] = llama_cpp_peer.decode_steps(llama, prompts, out)
        llama.close()
    return result


def ttft(ours, vocab: int, prefix_len: int = 1024) -> dict[str, float]:
    prefix_len = min(prefix_len, ours.config.max_position_embeddings - 64)
    prefix = torch.randint(0, vocab, (prefix_len,)).tolist()
    cfg = EngineConfig(max_num_batched_tokens=2048)
    cached = Engine(ours, None, cfg)
    engine_generate(cached, [prefix + [1, 2, 3]], 1)  # puts the prefix in the cache
    question = prefix + torch.randint(0, vocab, (32,)).tolist()
    hit = engine_generate(cached, [question], 1)
    cold = Engine(ours, None, EngineConfig(max_num_batched_tokens=2048,
                                           enable_prefix_caching=False))
    miss = engine_generate(cold, [question], 1)
    return {"cached prefix": hit, "no prefix cache": miss}


def served_rows(ours, theirs, args, peer: Path | None = None) -> list[list[str]]:
    """The throughput of R concurrent requests, decode steps of 16 sequences and the time to
    first token, as table rows; with `peer` (a GGUF file of the same weights) llama.cpp's
    figures on the same prompts beside the engine's."""
    vocab = ours.config.vocab_size
    thr = throughput(ours, theirs, vocab, args.requests, args.prompt, args.output,
                     args.kv_cache_dtype, peer)
    first = ttft(ours, vocab)
    steps = decode_steps(ours, vocab, 16, args.prompt, args.output, peer=peer)
    long_prompt = min(args.long_prompt, ours.config.max_position_embeddings - args.output - 1)
    long = decode_steps(ours, vocab, 16, long_prompt, args.output, args.kv_cache_dtype, peer)
    kv = f", {args.kv_cache_dtype} KV" if args.kv_cache_dtype != "auto" else ""

    def vs_peer(result: dict[str, float]) -> str:
        return (f"{result['engine'] / result['llama.cpp']:.2f}x llama.cpp" if peer
                else "llama.cpp not installed (pip install llama-cpp-python)")

    def peer_row(label: str, result: dict[str, float], kv_dtype: str) -> list[list[str]]:
        what = f"{peer.stem.split('-')[-1]} GGUF, {_peer_kv(kv_dtype)} KV" if peer else ""
        return [[f"{label}, llama.cpp ({what})", f"{result['llama.cpp']:.1f} tok/s", ""]
                ] if peer else []

    return [
        [f"{args.requests} requests ({args.prompt}+{args.output}), engine{kv}",
         f"{thr['engine']:.1f} tok/s", f"{thr['engine'] / thr['transformers']:.2f}x HF batched, "
         + vs_peer(thr)],
        [f"{args.requests} requests, transformers batched generate",
         f"{thr['transformers']:.1f} tok/s", ""],
        *peer_row(f"{args.requests} requests", thr, args.kv_cache_dtype),
        [f"{args.requests} requests, transformers prefill only (1 token)",
         f"{thr['transformers prefill s']:.1f} s of {thr['transformers s']:.1f} s",
         f"most a free decode gives with this prefill: "
         f"{thr['transformers s'] / thr['transformers prefill s']:.1f}x"],
        [f"16 sequences, decode steps only ({args.prompt}-token prompts cached), engine",
         f"{steps['engine']:.1f} tok/s", vs_peer(steps)],
        *peer_row("16 sequences, decode steps only", steps, "auto"),
        [f"16 sequences, decode steps only ({long_prompt}-token prompts cached), engine{kv}",
         f"{long['engine']:.1f} tok/s", vs_peer(long)],
        *peer_row(f"16 sequences at {long_prompt}-token prompts", long, args.kv_cache_dtype),
        ["TTFT, 1k (or context-64) prefix cached", f"{first['cached prefix'] * 1e3:.0f} ms",
         f"{first['no prefix cache'] / first['cached prefix']:.1f}x faster"],
        ["TTFT, no prefix cache", f"{first['no prefix cache'] * 1e3:.0f} ms", ""],
    ]


def llama_cpp_files(model, folder: Path, args) -> dict[str, tuple[Path, float]]:
    """{row name: (GGUF file, bytes llama.cpp reads per token)} of the model's dtype (f32, bf16
    or f16) and, with --quantize int8, of q8_0; {} without llama-cpp-python."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama.cpp rows left out: pip install llama-cpp-python")
        return {}
    fp32_bytes = read_bytes(model) * 4 / model.lm_head.weight.element_size()
    kinds = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
    types = [kinds[args.dtype]] + (["q8_0"] if args.quantize else [])
    per_weight = {"f32": 1.0, "bf16": 0.5, "f16": 0.5, "q8_0": 34 / 32 / 4}  # q8_0: 32 + 2 B
    return {f"llama.cpp, {t} GGUF": (llama_cpp_peer.gguf_file(model, folder, t),
                                      fp32_bytes * per_weight[t]) for t in types}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--output", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="batch-1 rounds, each with its own bandwidth measurement; medians")
    parser.add_argument("--kv-cache-dtype", default="auto",
                        help="the engine's KV pool in the throughput and long-context runs "
                             "(auto: the weights')")
    parser.add_argument("--long-prompt", type=int, default=1024,
                        help="the prompts of the long-context decode row (capped by the context)")
    parser.add_argument("--compile", action="store_true",
                        help="also time batch-1 decode on PyTorch's operators with compile_decode "
                             "(compiles minutes)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="also time batch-1 decode with the engine's weight-only "
                             "quantisation (on a copy of the model)")
    parser.add_argument("--no-llama-cpp", action="store_true",
                        help="leave out llama.cpp (run on the same weights as GGUF when "
                             "llama-cpp-python is installed)")
    parser.add_argument("--decode-only", action="store_true",
                        help="batch-1 decode only (bf16 prefill is very slow on CPUs without "
                             "bf16 units)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    ours, theirs = build(args.model, dtype)
    vocab = ours.config.vocab_size
    weight_bytes = read_bytes(ours)
    gguf_dir = Path(tempfile.mkdtemp(prefix="bench-gguf-"))
    peers = llama_cpp_files(ours, gguf_dir, args) if not args.no_llama_cpp else {}
    dec = decode_rates(ours, theirs, vocab, args.decode_tokens, args.rounds,
                       compile=args.compile, quantize=args.quantize, peers=peers)
    paired = paired_steps(ours, vocab, args.decode_tokens, args.rounds)
    names = [k for k in dec
             if k != "floor" and not k.endswith((" share", " vs transformers", " floor"))]
    rows = [
        ["read bandwidth -> floor", spread([f * weight_bytes / 1e9 for f in dec["floor"]], ".1f")
         + " GB/s", f"weights {weight_bytes / 1e6:.0f} MB -> floor "
         f"{spread(dec['floor'], '.1f')} tok/s"],
        *([[f"batch-1 decode, {name}", f"{spread(dec[name], '.1f')} tok/s",
            f"{spread(dec[f'{name} share'], '.0%')} of floor"
            + (f" ({spread(dec[f'{name} floor'], '.1f')} tok/s)"
               if dec[f"{name} floor"] != dec["floor"] else "")
            + ("" if name == "transformers"
               else f", {spread(dec[f'{name} vs transformers'], '.2f')}x HF")]
           for name in names]),
        ["batch-1 decode steps, engine, each after a read",
         f"{spread(paired['tok/s'], '.1f')} tok/s", f"{spread(paired['share'], '.0%')} of floor "
         f"(read {spread(paired['GB/s'], '.1f')} GB/s)"]]
    for peer in peers:  # the engine against llama.cpp on the same bytes, within each round
        ours_name = "engine, int8 weights" if peer.endswith("q8_0 GGUF") else "engine"
        ratios = [a / b for a, b in zip(dec[ours_name], dec[peer])]
        rows.append([f"batch-1 decode, {ours_name} vs {peer}", spread(ratios, ".2f") + "x", ""])
    if not args.decode_only:
        main_peer = next(iter(peers.values()))[0] if peers else None
        rows += served_rows(ours, theirs, args, main_peer)
    shutil.rmtree(gguf_dir)
    print_table(f"engine vs transformers, {args.model} {args.dtype}, "
                f"{torch.get_num_threads()} threads", ["figure", "value", "ratio"], rows)


if __name__ == "__main__":
    main()
