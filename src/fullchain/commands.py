"""The bodies of the CLI commands (argparse namespaces in, exit codes out)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

from fullchain.config import FullchainError


def _device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FullchainError(f"--device {name}: no CUDA device is available here; use cpu")
    return name


def _sampling(args: argparse.Namespace, tok):
    from fullchain.generate import SamplingParams
    return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                          stop_token_ids=tok.stop_token_ids, stop=args.stop)


def generate(args: argparse.Namespace) -> int:
    """Only the continuation goes to stdout, streamed; logs go to stderr."""
    from fullchain.checkpoint.pretrained import load_pretrained
    from fullchain.generate import generate_text

    model, tok = load_pretrained(args.model_dir, dtype=args.dtype, device=_device(args.device))
    if args.chat:
        ids = tok.apply_chat_template([{"role": "user", "content": args.prompt}],
                                      add_generation_prompt=True, tokenize=True)
    else:
        ids = tok.encode(args.prompt, add_special_tokens=True)
    for chunk in generate_text(model, tok, ids, _sampling(args, tok)):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def engine_config(args: argparse.Namespace):
    from fullchain.engine import EngineConfig
    return EngineConfig(block_size=args.block_size, kv_cache_gb=args.kv_cache_gb,
                        kv_cache_dtype=args.kv_cache_dtype,
                        max_num_seqs=args.max_num_seqs,
                        max_num_batched_tokens=args.max_num_batched_tokens,
                        max_model_len=args.max_model_len,
                        enable_prefix_caching=not args.no_prefix_caching,
                        compile_decode=args.compile, quantization=args.quantize)


def chat(args: argparse.Namespace) -> int:
    """A terminal chat loop on the engine (the history stays in its prefix cache);
    /reset clears the history, /exit or Ctrl-D leaves."""
    from fullchain.engine import Engine, SamplingParams

    engine = Engine.from_pretrained(args.model_dir, engine_config(args), dtype=args.dtype,
                                    device=_device(args.device))
    tok = engine.tokenizer
    if not tok.chat_template:
        raise FullchainError(f"{args.model_dir}: the tokenizer has no chat template; use "
                             "`fullchain generate` or add chat_template.jinja")
    params = SamplingParams(max_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict] = []
    print("chat with the model; /reset clears the history, /exit leaves", file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            return 0
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset" or not line:
            history = [] if line == "/reset" else history
            continue
        history.append({"role": "user", "content": line})
        ids = tok.apply_chat_template(system + history, add_generation_prompt=True, tokenize=True)
        room = engine.max_model_len - len(ids)
        if room <= 0:
            print("error: the conversation fills the context; /reset it", file=sys.stderr)
            history.pop()
            continue
        reply = _stream_reply(engine, ids, replace(params, max_tokens=min(params.max_tokens, room)))
        history.append({"role": "assistant", "content": reply})


def _stream_reply(engine, ids: list[int], params) -> str:
    """One answer of the chat, streamed to stdout as it comes; returns its text."""
    sys.stdout.write("model> ")
    reply = []
    for out in engine.stream(ids, params):
        reply.append(out.text)
        sys.stdout.write(out.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(reply)


def serve(args: argparse.Namespace) -> int:
    from fullchain.serve import serve as run_server
    run_server(args.model_dir, host=args.host, port=args.port, api_key=args.api_key,
               model_name=args.model_name, dtype=args.dtype, device=_device(args.device),
               engine_config=engine_config(args), tool_parser=args.tool_call_parser,
               max_queued=args.max_queued)
    return 0


def info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from fullchain.checkpoint import load_config
    cfg = load_config(args.model_dir)
    table = Table(title=str(args.model_dir))
    table.add_column("key")
    table.add_column("value")
    for key in ("architecture", "vocab_size", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
                "max_position_embeddings", "rope_theta", "rope_scaling", "tie_word_embeddings"):
        table.add_row(key, json.dumps(getattr(cfg, key)))
    table.add_row("parameters", f"{cfg.num_params():,}")
    Console().print(table)
    return 0


def gguf(args: argparse.Namespace) -> int:
    from fullchain.checkpoint.gguf import export_gguf
    out = export_gguf(args.model_dir, args.out, file_type=args.file_type)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {args.file_type})")
    return 0


def world(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fullchain.world import WorldConfig, write_world
    cfg = replace(WorldConfig.preset(args.preset), seed=args.seed)
    summary = write_world(args.out, cfg)
    print(json.dumps(summary, indent=2))
    return 0


def tokenizer_train(args: argparse.Namespace) -> int:
    from fullchain.data.tokenize import train_tokenizer
    tok = train_tokenizer(args.documents, args.out, vocab_size=args.vocab_size,
                          template=args.template)
    print(f"tokenizer with {tok.vocab_size} tokens written to {args.out}", file=sys.stderr)
    return 0


def tokenize(args: argparse.Namespace) -> int:
    from fullchain.data.tokenize import tokenize_documents
    meta = tokenize_documents(args.documents, args.tokenizer, args.out,
                              val_fraction=args.val_fraction, seed=args.seed,
                              val_sources=args.val_sources)
    print(json.dumps({k: meta[k] for k in ("num_tokens", "num_documents", "shards")}, indent=2))
    return 0


def pretrain(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.config import load_config
    from fullchain.train.pretrain import PretrainConfig, run
    if args.out is not None:
        overrides = [*overrides, f"out={args.out}"]
    cfg = load_config(PretrainConfig, path=args.config, overrides=overrides)
    summary = run(cfg)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(json.dumps(summary, indent=2))
    return 0


def data(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.config import load_config
    from fullchain.data.config import PipelineConfig
    from fullchain.data.pipeline import run
    if args.out is not None:
        overrides = [*overrides, f"out={args.out}"]
    cfg = load_config(PipelineConfig, path=args.config, overrides=overrides)
    stats = run(cfg)
    print(json.dumps({"documents_out": stats["documents_out"], "rejected": stats["rejected"],
                      "out": str(cfg.out)}, indent=2))
    return 0


def synth(args: argparse.Namespace) -> int:
    """Self-instruct synthesis with a progress bar, then a summary table on stdout."""
    from rich.console import Console
    from rich.table import Table

    from fullchain.data.synth import SynthConfig, meta_path, synthesize
    from fullchain.llm import is_url
    cfg = SynthConfig(seeds=args.seeds, out=args.out, llm=args.llm, model=args.model,
                      api_key=args.api_key, num_new=args.num_new,
                      examples_per_prompt=args.examples_per_prompt,
                      max_attempts=args.max_attempts, max_similarity=args.max_similarity,
                      temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed,
                      dtype=args.dtype,
                      device=args.device if is_url(args.llm) else _device(args.device))
    summary = synthesize(cfg, progress=True)
    table = Table(title="synth")
    table.add_column("pairs")
    table.add_column("count", justify="right")
    table.add_row("kept", str(summary["kept"]))
    for reason, count in sorted(summary["skipped"].items()):
        table.add_row(f"skipped: {reason}", str(count))
    table.add_row("attempts", str(summary["attempts"]))
    console = Console()
    console.print(table)
    console.print(f"{cfg.out} (lineage: {meta_path(cfg.out)})", soft_wrap=True)
    return 0
