"""`fullchain <command>`: a table of subcommands. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fullchain.config import FullchainError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", type=Path, help="an HF model folder")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def _add_sampling_args(p: argparse.ArgumentParser, *, max_new_tokens: int) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--block-size", type=int, default=16, help="KV block size in tokens")
    p.add_argument("--kv-cache-gb", type=float, default=1.0, help="KV pool size")
    p.add_argument("--kv-cache-dtype", default="auto",
                   help="dtype of the KV pool: auto (the model's), float32, bfloat16, float16 or "
                        "int8; bfloat16 halves it, int8 (a scale per key and kv head) takes "
                        "about a quarter")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="store the linear and embedding weights as int8 with a scale per row "
                        "(weight-only: a quarter of fp32's bytes read per token)")
    p.add_argument("--max-num-seqs", type=int, default=64, help="running batch size")
    p.add_argument("--max-num-batched-tokens", type=int, default=512, help="tokens per step")
    p.add_argument("--max-model-len", type=int, default=None, help="context (default: model)")
    p.add_argument("--no-prefix-caching", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode steps "
                   "that the CPU kernels do not take (a GPU, no C++ compiler; compiles at the "
                   "first decode: a minute or more)")


def cmd_generate(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.commands import generate
    return generate(args)


def cmd_chat(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.commands import chat
    return chat(args)


def cmd_info(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.commands import info
    return info(args)


def cmd_gguf(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.commands import gguf
    return gguf(args)


def cmd_world(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.commands import world
    return world(args)


def cmd_tokenizer(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.commands import tokenizer_train
    return tokenizer_train(args)


def cmd_tokenize(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.commands import tokenize
    return tokenize(args)


def cmd_data(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.commands import data
    return data(args, overrides)


def cmd_synth(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.commands import synth
    return synth(args)


def cmd_pretrain(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.commands import pretrain
    return pretrain(args, overrides)


def cmd_serve(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.commands import serve
    return serve(args)


def cmd_demo(args: argparse.Namespace, overrides: list[str]) -> int:
    from fullchain.demo import main as demo_main
    return demo_main(out=args.out, quick=args.quick, overrides=overrides)


# Stages whose issues are still open: the command exists so that it fails clearly.
NOT_YET = {
    "sft": "supervised fine-tuning and LoRA",
    "dpo": "preference tuning",
    "eval": "evaluation (MCQ, generation, NIAH)",
    "agent": "tool-using agents",
}


def cmd_not_yet(args: argparse.Namespace, overrides: list[str]) -> int:
    raise FullchainError(f"'fullchain {args.command}' is not implemented yet: "
                         f"{NOT_YET[args.command]} (see README, 'Status')")


def _add_synth_parser(sub) -> None:
    p = sub.add_parser("synth", help="self-instruct: new instruction/response pairs from seed "
                       "tasks with a model folder or an OpenAI-compatible endpoint")
    p.add_argument("--seeds", type=Path, required=True, help="JSONL of instruction/response")
    p.add_argument("--out", type=Path, required=True, help="JSONL of the new pairs")
    p.add_argument("--llm", required=True, help="a model folder, or an API root such as "
                   "http://127.0.0.1:8000/v1")
    p.add_argument("--model", default=None, help="the model name at the URL (default: the "
                   "server's first; for a folder, the name recorded)")
    p.add_argument("--api-key", default="", help="sent as 'Authorization: Bearer KEY'")
    p.add_argument("--num-new", type=int, default=20, help="pairs to keep")
    p.add_argument("--examples-per-prompt", type=int, default=3)
    p.add_argument("--max-attempts", type=int, default=100, help="model calls at most")
    p.add_argument("--max-similarity", type=float, default=0.7,
                   help="word-bigram Jaccard at which a new instruction is a duplicate")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=512, help="per reply")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", help="a model folder's dtype")
    p.add_argument("--device", default="auto", help="a model folder's device")
    p.set_defaults(func=cmd_synth)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fullchain", description=(
        "One toolkit for the whole life of a language model. Stage configs take "
        "--config FILE.yaml and dotted overrides such as --train.max_steps 200."))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_model_parsers(sub)
    _add_data_parsers(sub)
    _add_synth_parser(sub)
    _add_train_parsers(sub)
    for name, what in NOT_YET.items():
        p = sub.add_parser(name, help=f"(not implemented yet) {what.split(';')[0]}")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=cmd_not_yet)
    return parser


def _add_model_parsers(sub) -> None:
    """Commands over a model folder: generate, chat, serve, info, gguf."""
    p = sub.add_parser("generate", help="continue a prompt with a model folder")
    _add_model_args(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    _add_sampling_args(p, max_new_tokens=64)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="interactive streaming chat in the terminal")
    _add_model_args(p)
    p.add_argument("--system", default=None, help="a system prompt")
    _add_sampling_args(p, max_new_tokens=256)
    _add_engine_args(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="OpenAI-compatible server and web chat over the engine")
    _add_model_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    p.add_argument("--model-name", default=None, help="the id in /v1/models (default: folder)")
    p.add_argument("--tool-call-parser", default=None, help="internlm2 | hermes | llama3 "
                   "(default: from the chat template)")
    p.add_argument("--max-queued", type=int, default=256, help="waiting requests before 429")
    _add_engine_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("info", help="describe a model folder")
    p.add_argument("model_dir", type=Path)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("gguf", help="write a model folder as one GGUF file for llama.cpp")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the .gguf file to write")
    p.add_argument("--type", default="f32", dest="file_type",
                   help="f32 | f16 | bf16 | q8_0 (norms stay f32)")
    p.set_defaults(func=cmd_gguf)


def _add_data_parsers(sub) -> None:
    """The embedded world, the cleaning pipeline, tokenizer training and tokenization."""
    p = sub.add_parser("world", help="write the embedded world (documents, chats, eval sets)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", default="default", help="quick | default")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_world)

    p = sub.add_parser("data", help="clean, filter, dedup, decontaminate and tokenize "
                       "documents (config + dotted overrides)")
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="the output folder (config key 'out')")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer on documents")
    p.add_argument("--documents", type=Path, nargs="+", required=True)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--template", default="chatml", help="built-in chat template to attach")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_tokenizer)

    p = sub.add_parser("tokenize", help="documents -> token shards with a train/val split")
    p.add_argument("--documents", type=Path, nargs="+", required=True)
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--val-fraction", type=float, default=0.02)
    p.add_argument("--val-sources", nargs="+", default=None, metavar="SOURCE",
                   help="hold out only documents whose meta.source is one of these")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tokenize)


def _add_train_parsers(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain on token shards (config + dotted overrides)")
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="the run folder (config key 'out')")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("demo", help="run the whole chain on the embedded world")
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.add_argument("--quick", action="store_true", help="a smaller world and run (for tests)")
    p.set_defaults(func=cmd_demo)


def huge_page_heap_env(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The environment to run this process again with glibc's malloc heap in transparent huge
    pages (the tunable ``glibc.malloc.hugetlb=1``, glibc >= 2.35, read only at start-up), or
    None where that does not apply: already set, not glibc, no THP, or turned off with
    ``FULLCHAIN_HUGE_PAGES=0``.

    Training on the CPU allocates its activations afresh every step (glibc keeps them in its
    heap: `fullchain.model.memory.keep_freed_memory`); with the heap in 2 MB pages the tiny
    model's step ran 1.07x (median of 6 pairs of fresh processes), the 135M shape's
    1.00-1.02x, the engine's prompts no faster. `command` runs itself again with it."""
    environ = dict(os.environ if environ is None else environ)
    tunables = environ.get("GLIBC_TUNABLES", "")
    if environ.get("FULLCHAIN_HUGE_PAGES", "1") == "0" or "glibc.malloc.hugetlb" in tunables:
        return None
    lib, version = platform.libc_ver()
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = "[never]" not in f.read()
    except (OSError, ValueError):
        return None
    if lib != "glibc" or (major, minor) < (2, 35) or not thp:
        return None
    environ["GLIBC_TUNABLES"] = ":".join(filter(None, [tunables, "glibc.malloc.hugetlb=1"]))
    return environ


def _rerun_with_huge_page_heap() -> None:
    """Replace this process by the same command with glibc's heap in huge pages
    (`huge_page_heap_env`); nothing where that does not apply."""
    env = huge_page_heap_env()
    if env is not None and getattr(sys, "orig_argv", None):
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execve(sys.executable, sys.orig_argv, env)
        except OSError:  # cannot run itself again: go on as it is
            pass


def main(argv: Sequence[str] | None = None) -> int:
    from fullchain.config import split_cli_overrides

    argv = list(sys.argv[1:] if argv is None else argv)
    overrides, rest = split_cli_overrides(argv)
    args = build_parser().parse_args(rest)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    func: Callable[[argparse.Namespace, list[str]], int] = args.func
    if overrides and args.command not in ("pretrain", "data", "demo", *NOT_YET):
        print(f"error: '{args.command}' takes no dotted config overrides ({overrides[0]})",
              file=sys.stderr)
        return 2
    try:
        return func(args, overrides) or 0
    except FullchainError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def command() -> int:
    """The `fullchain` command (console script and ``python -m fullchain``): first runs itself
    again with glibc's heap in huge pages where that applies, then `main`. Python callers call
    `main`, which never re-executes the interpreter."""
    _rerun_with_huge_page_heap()
    return main()


if __name__ == "__main__":
    sys.exit(command())
