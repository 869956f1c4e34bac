"""`fullchain demo`: the whole chain on the embedded world, as a list of stage calls meeting in DIR.

Each stage is a function `(ctx) -> dict of figures`; the figures go to DIR/results.json and the
report DIR/report.md. Later stages (SFT, eval, serving, agents) add themselves to STAGES.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from fullchain import __version__


@dataclass
class DemoContext:
    out: Path
    quick: bool
    overrides: list[str]
    results: dict[str, Any] = field(default_factory=dict)


def stage_world(ctx: DemoContext) -> dict:
    from fullchain.world import WorldConfig, write_world
    cfg = WorldConfig.preset("quick" if ctx.quick else "default")
    return write_world(ctx.out / "world", cfg)


def stage_data(ctx: DemoContext) -> dict:
    """The data pipeline on the world's documents plus real text found on this machine."""
    from fullchain.data.demo import run_demo_pipeline
    return run_demo_pipeline(ctx.out, quick=ctx.quick)


def _documents(ctx: DemoContext) -> list[Path]:
    from fullchain.data.writers import document_files
    return document_files(ctx.out / "data")


def stage_tokenizer(ctx: DemoContext) -> dict:
    from fullchain.data.tokenize import train_tokenizer
    vocab = 2048 if ctx.quick else 4096
    tok = train_tokenizer(_documents(ctx), ctx.out / "tokenizer", vocab_size=vocab)
    sample = "Q: Where was the founder born? 问题：她出生在哪里？ 17 + 25 = 42"
    ids = tok.encode(sample)
    return {"vocab_size": tok.vocab_size, "sample": sample, "sample_tokens": len(ids),
            "chars_per_token": round(len(sample) / len(ids), 2)}


def stage_tokenize(ctx: DemoContext) -> dict:
    from fullchain.data.tokenize import tokenize_documents
    meta = tokenize_documents(_documents(ctx), ctx.out / "tokenizer", ctx.out / "tokens",
                              val_fraction=0.03, val_sources=["world"])
    return {"num_tokens": meta["num_tokens"], "num_documents": meta["num_documents"],
            "shards": meta["shards"]}


def pretrain_config(ctx: DemoContext, name: str, *, out: str, init_from: Path | None = None):
    """A packaged recipe (`demo_<name>[_quick].yaml`) with the demo's paths filled in."""
    from fullchain.config import load_config
    from fullchain.train.pretrain import PretrainConfig
    recipe = Path(__file__).parent / "recipes" / f"{name}{'_quick' if ctx.quick else ''}.yaml"
    overrides = ctx.overrides if name == "demo" else []
    cfg = load_config(PretrainConfig, path=recipe, overrides=overrides)
    return replace(cfg, out=ctx.out / out, data=replace(cfg.data, path=ctx.out / "tokens"),
                   model=replace(cfg.model, init_from=init_from))


def _run_into(cfg, model_dir: Path) -> dict:
    """Train (resuming a killed demo's run) and copy the model to `model_dir`; checkpoints of
    an earlier demo trained on other token data are deleted and the stage starts over."""
    import shutil

    from fullchain.train.data import DataChangedError
    from fullchain.train.pretrain import run
    try:
        summary = run(cfg)
    except DataChangedError as e:
        print(f"starting {cfg.out} over: {e}", file=sys.stderr)
        shutil.rmtree(Path(cfg.out) / "checkpoints")
        summary = run(cfg)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(summary["model_dir"], model_dir)
    summary["model_dir"] = str(model_dir)
    return summary


def stage_pretrain(ctx: DemoContext) -> dict:
    return _run_into(pretrain_config(ctx, "demo", out="pretrain"), ctx.out / "model")


def stage_long_context(ctx: DemoContext) -> dict:
    """Extend the context 4x (raised RoPE base, short continued training); compare both models'
    validation loss at the long length."""
    from fullchain.train.pretrain import validation_loss
    cfg = pretrain_config(ctx, "demo_long", out="pretrain_long", init_from=ctx.out / "model")
    summary = _run_into(cfg, ctx.out / "model_long")
    seq_len = cfg.data.seq_len
    summary["long_seq_len"] = seq_len
    summary["base_seq_len"] = pretrain_config(ctx, "demo", out="pretrain").data.seq_len
    summary["rope_theta"] = cfg.model.rope_theta
    summary["val_loss_at_long"] = {
        name: validation_loss(ctx.out / name, ctx.out / "tokens", seq_len=seq_len)
        for name in ("model", "model_long")}
    return summary


def stage_sample(ctx: DemoContext) -> dict:
    """Greedy samples, and a first probe of learned facts: questions in the training Q&A form
    about train people (their Q&A was pretraining text) and held-out people (it never was)."""
    from fullchain.checkpoint.pretrained import load_pretrained
    from fullchain.generate import SamplingParams, generate_text
    model, tok = load_pretrained(ctx.out / "model")
    params = SamplingParams(max_new_tokens=16, stop_token_ids=tok.stop_token_ids, stop=["\n"])

    def complete(prompt: str) -> str:
        return "".join(generate_text(model, tok, tok.encode(prompt), params)).strip()

    start = time.perf_counter()
    samples = [{"prompt": p, "continuation": complete(p)}
               for p in ("12 + 7 =", "35 - 14 =", "The city of")]
    probe = {}
    for split in ("train", "heldout"):
        rows = _qa_rows(ctx.out / "world" / "eval" / f"{split}_qa.jsonl", limit=40)
        answers = [complete(f"Q: {r['question_qa_form']}\nA:") for r in rows]
        hits = [a.rstrip(".").lower() == r["answer"].lower() for a, r in zip(answers, rows)]
        probe[split] = {"questions": len(rows), "exact_match": sum(hits) / max(1, len(rows))}
        samples += [{"prompt": f"Q: {r['question_qa_form']}\nA:", "continuation": a,
                     "expected": r["answer"]} for r, a in list(zip(rows, answers))[:2]]
    return {"samples": samples, "fact_probe": probe, "seconds": time.perf_counter() - start}


def stage_serve(ctx: DemoContext) -> dict:
    """`fullchain serve` on the demo model, on a free loopback port, driven by the official
    `openai` client: a few chats (one streamed), then the server is stopped."""
    import openai
    questions = ["Where was the founder born?", "12 + 7 =", "Tell me about the city."]
    with _server(ctx.out / "model") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="demo", max_retries=0, timeout=120)
        model = client.models.list().data[0].id
        transcript = []
        for i, question in enumerate(questions):
            start = time.perf_counter()
            messages = [{"role": "user", "content": question}]
            if i == len(questions) - 1:  # the last one streamed, as the web page does
                chunks = client.chat.completions.create(
                    model=model, messages=messages, max_tokens=48, temperature=0, stream=True,
                    stream_options={"include_usage": True})
                parts, tokens = [], 0
                for ch in chunks:
                    parts += [c.delta.content or "" for c in ch.choices]
                    tokens = ch.usage.completion_tokens if ch.usage else tokens
                answer = "".join(parts)
            else:
                r = client.chat.completions.create(model=model, messages=messages,
                                                   max_tokens=48, temperature=0)
                answer, tokens = r.choices[0].message.content, r.usage.completion_tokens
            transcript.append({"user": question, "assistant": answer, "tokens": tokens,
                               "streamed": i == len(questions) - 1,
                               "seconds": round(time.perf_counter() - start, 2)})
    tokens = sum(t["tokens"] for t in transcript)
    seconds = sum(t["seconds"] for t in transcript)  # request to last token, over HTTP
    return {"model": model, "chats": len(transcript), "completion_tokens": tokens,
            "tokens_per_s": round(tokens / max(seconds, 1e-9), 1), "transcript": transcript}


def stage_quantize(ctx: DemoContext) -> dict:
    """The demo model in the engine with weight-only int8 weights against fp32: held-out loss
    (the engine's scoring over windows of the validation split) and batch-1 decode speed."""
    from fullchain.engine import Engine, EngineConfig, SamplingParams
    from fullchain.engine.kernels import weight_bytes
    windows = _val_windows(ctx)
    figures = {"windows": len(windows), "window_tokens": 256}
    for name, method in (("float32", None), ("int8", "int8")):
        engine = Engine.from_pretrained(ctx.out / "model", EngineConfig(quantization=method))
        scores = engine.score([(w[:1], w[1:]) for w in windows])
        loss = -sum(s for s, _ in scores) / sum(len(w) - 1 for w in windows)
        engine.generate([windows[0][:32]], SamplingParams(max_tokens=8, ignore_eos=True))
        start = time.perf_counter()
        engine.generate([windows[0][:32]], SamplingParams(max_tokens=128, ignore_eos=True))
        figures[name] = {"val_loss": round(loss, 6),
                         "decode_tokens_per_s": round(128 / (time.perf_counter() - start), 1),
                         "weight_mb": round(weight_bytes(engine.model) / 1e6, 2)}
    return figures


def _val_windows(ctx: DemoContext, count: int = 8, size: int = 256) -> list[list[int]]:
    """The first `count` windows of `size` tokens of the validation split, documents joined."""
    from fullchain.formats.tokens import TokenDataset
    val = TokenDataset(ctx.out / "tokens", "val")
    stream: list[int] = []
    for i in range(len(val)):
        stream += val.document(i).tolist()
        if len(stream) >= count * size:
            break
    return [stream[i:i + size] for i in range(0, len(stream) - size + 1, size)][:count]


def stage_gguf(ctx: DemoContext) -> dict:
    """The demo model as GGUF files for llama.cpp (f32 and q8_0), and llama.cpp itself on them
    where llama-cpp-python is installed: its held-out loss on the quantize stage's windows
    (teacher-forced) and its tokenization of the windows' text against ours. (Its speed is
    bench_engine's: the high-level API used here copies every position's logits.)"""
    from fullchain.checkpoint.gguf import export_gguf
    from fullchain.config import CheckpointError
    try:
        files = {t: export_gguf(ctx.out / "model", ctx.out / f"model-{t}.gguf", file_type=t)
                 for t in ("f32", "q8_0")}
    except CheckpointError as e:  # the gguf package is an extra
        return {"skipped": str(e)}
    figures: dict[str, Any] = {t: {"file": p.name, "mb": round(p.stat().st_size / 1e6, 2)}
                               for t, p in files.items()}
    try:
        import llama_cpp
    except ImportError:
        figures["llama_cpp"] = "not installed (pip install llama-cpp-python)"
        return figures
    from fullchain.tokenizer import Tokenizer
    windows = _val_windows(ctx)
    tok = Tokenizer.from_dir(ctx.out / "model")
    texts = [tok.decode(w) for w in windows]
    for t, path in files.items():
        llm = llama_cpp.Llama(str(path), n_ctx=512, n_threads=torch.get_num_threads(),
                              logits_all=True, verbose=False)
        figures[t]["llama_cpp_val_loss"] = round(_llama_cpp_loss(llm, windows), 6)
        figures[t]["same_tokens"] = sum(
            llm.tokenize(text.encode(), add_bos=False, special=True) == tok.encode(text)
            for text in texts)
        llm.close()
    figures["texts"] = len(texts)
    return figures


def _llama_cpp_loss(llm, windows: list[list[int]]) -> float:
    """Mean negative log-likelihood of each window's tokens after its first, from llama.cpp's
    logits (teacher-forced), as the engine's scoring computes it."""
    nll = 0.0
    for w in windows:
        llm.reset()
        llm.eval(w)
        logp = torch.log_softmax(torch.tensor(llm.scores[:len(w) - 1], dtype=torch.float64), -1)
        nll -= logp[torch.arange(len(w) - 1), torch.tensor(w[1:])].sum().item()
    return nll / sum(len(w) - 1 for w in windows)


def _server(model_dir: Path):
    import contextlib
    import socket
    import subprocess
    import sys
    import urllib.request

    @contextlib.contextmanager
    def running():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "fullchain", "serve", str(model_dir),
                                 "--port", str(port), "--max-model-len", "1024"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):  # up to 60 s for the model to load
                if proc.poll() is not None:
                    raise RuntimeError(f"fullchain serve exited: {proc.stderr.read().decode()}")
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    return running()


def _qa_rows(path: Path, *, limit: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if r.get("lang") == "en"][:limit]


STAGES: list[tuple[str, Callable[[DemoContext], dict]]] = [
    ("world", stage_world),
    ("data", stage_data),
    ("tokenizer", stage_tokenizer),
    ("tokenize", stage_tokenize),
    ("pretrain", stage_pretrain),
    ("long_context", stage_long_context),
    ("sample", stage_sample),
    ("serve", stage_serve),
    ("quantize", stage_quantize),
    ("gguf", stage_gguf),
]


def main(*, out: Path, quick: bool = False, overrides: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from fullchain.report import write_report
    console = Console(stderr=True)
    ctx = DemoContext(out=Path(out), quick=quick, overrides=list(overrides or []))
    ctx.out.mkdir(parents=True, exist_ok=True)
    ctx.results = {"fullchain_version": __version__, "quick": quick, "torch": torch.__version__,
                   "python": platform.python_version(), "threads": torch.get_num_threads(),
                   "stages": {}}
    total = time.perf_counter()
    for name, fn in STAGES:
        console.rule(f"[bold]{name}")
        start = time.perf_counter()
        figures = fn(ctx)
        figures["stage_seconds"] = round(time.perf_counter() - start, 2)
        ctx.results["stages"][name] = figures
        _write_results(ctx)
    ctx.results["total_seconds"] = round(time.perf_counter() - total, 2)
    _write_results(ctx)
    report = write_report(ctx.out, ctx.results)
    table = Table(title="fullchain demo")
    for col in ("stage", "seconds", "key figures"):
        table.add_column(col)
    for name, figures in ctx.results["stages"].items():
        table.add_row(name, f"{figures['stage_seconds']:.1f}", _headline(name, figures))
    console.print(table)
    console.print(f"report: {report}")
    return 0


def _write_results(ctx: DemoContext) -> None:
    path = ctx.out / "results.json"
    path.write_text(json.dumps(ctx.results, indent=2, ensure_ascii=False, default=str) + "\n",
                    encoding="utf-8")


def _headline(name: str, f: dict) -> str:
    if name == "pretrain":
        return (f"loss {f['first_loss']:.2f} -> {f['final_loss']:.2f}, val {f['val_loss']:.3f}, "
                f"{f['tokens_per_s']:.0f} tok/s")
    if name == "long_context":
        v = f["val_loss_at_long"]
        return (f"{f['base_seq_len']} -> {f['long_seq_len']} tokens: val loss at "
                f"{f['long_seq_len']} {v['model']:.2f} -> {v['model_long']:.2f}")
    if name == "world":
        return (f"{f['people']} people, {f['documents']:,} documents, "
                f"{f['text_bytes'] / 1e6:.1f} MB of text")
    if name == "data":
        return (f"{f['documents_in']:,} -> {f['documents_out']:,} documents, "
                f"{f['duplicates_removed']:,} duplicates, {f['rejected']} rejects")
    if name == "tokenize":
        return f"{f['num_tokens']:,} tokens in {f['num_documents']:,} documents"
    if name == "tokenizer":
        return f"vocab {f['vocab_size']}, {f['chars_per_token']} chars/token"
    if name == "sample":
        p = f["fact_probe"]
        return (f"fact recall: train people {p['train']['exact_match']:.0%}, held-out "
                f"{p['heldout']['exact_match']:.0%}")
    if name == "serve":
        speed = (f": {f['completion_tokens']} tokens at {f['tokens_per_s']:.0f} tok/s"
                 if "tokens_per_s" in f else "")  # results written before it was recorded
        return f"{f['chats']} chats through the OpenAI API ({f['model']}){speed}"
    if name == "quantize":
        full, q = f["float32"], f["int8"]
        return (f"int8 weights: held-out loss {full['val_loss']:.5f} -> {q['val_loss']:.5f}, "
                f"decode {full['decode_tokens_per_s']:.0f} -> {q['decode_tokens_per_s']:.0f} "
                "tok/s")
    if name == "gguf" and "llama_cpp_val_loss" in f.get("q8_0", {}):
        return (f"llama.cpp: held-out loss {f['f32']['llama_cpp_val_loss']:.5f} (f32), "
                f"{f['q8_0']['llama_cpp_val_loss']:.5f} (q8_0, {f['q8_0']['mb']:.1f} MB)")
    return ", ".join(f"{k}={v}" for k, v in f.items() if isinstance(v, (int, float)))[:80]
