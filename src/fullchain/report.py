"""The demo's report: DIR/report.md, one section per stage with its figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _world(f: dict) -> list[str]:
    rows = [f"| {k} | {v:,} |" for k, v in f.items() if isinstance(v, int)]
    return ["Deterministic invented world (people, cities, arithmetic, dialogues) written as "
            "documents, chats and held-out eval questions.", "", "| item | count |", "|---|---|",
            *rows]


def _data(f: dict) -> list[str]:
    from fullchain.data.stats import HEADER, funnel_rows
    lines = [f"The cleaning pipeline on the world's documents, {f['stdlib_modules']} Python "
             f"standard-library modules' docstrings, {f['copyright_files']} Debian copyright "
             f"files found on this machine, and a small forum dump with {f['planted_leaks']} "
             "planted eval-question leaks. World documents skip the web heuristics, language "
             "filter and dedup (they are synthetic on purpose).", "",
             "| " + " | ".join(HEADER) + " |", "|---|" + "---:|" * (len(HEADER) - 2) + "---|"]
    lines += ["| " + " | ".join(row) + " |" for row in funnel_rows({"steps": f["funnel"]})]
    lines += ["", f"{f['num_clusters']} duplicate clusters; the largest:", "",
              "| size | kept | a removed copy |", "|---:|---|---|"]
    for c in f["clusters"]:
        removed = c["removed"][0]["id"] if c["removed"] else ""
        lines.append(f"| {c['size']} | `{Path(c['kept']['id']).name}`: "
                     f"{c['kept']['head'][:60]}… | `{Path(removed).name}` |")
    return lines


def _tokenizer(f: dict) -> list[str]:
    return [f"Byte-level BPE trained on the world's documents: **{f['vocab_size']} tokens**; "
            f"the sample `{f['sample']}` takes {f['sample_tokens']} tokens "
            f"({f['chars_per_token']} characters per token)."]


def _tokenize(f: dict) -> list[str]:
    rows = [f"| {s['name']} | {s['num_documents']:,} | {s['num_tokens']:,} |" for s in f["shards"]]
    return ["Documents to uint32 token shards with document-end offsets (split by document id; the "
            "validation split holds out world documents only, so that its loss measures the "
            "same thing on every machine).",
            "", "| split | documents | tokens |", "|---|---:|---:|", *rows]


def _pretrain(f: dict) -> list[str]:
    return [
        f"Tiny Llama-layout model ({f['num_params']:,} parameters), packed sequences with "
        "per-document attention masks, AdamW with warmup + cosine.", "",
        "| figure | value |", "|---|---:|",
        f"| optimizer steps | {f['steps']} |",
        f"| tokens trained | {f['tokens_trained']:,} |",
        f"| first training loss | {f['first_loss']:.3f} |",
        f"| final training loss (mean of last 10) | {f['final_loss']:.3f} |",
        f"| validation loss (held-out world documents) | {f['val_loss']:.3f} |",
        f"| training throughput | {f['tokens_per_s']:.0f} tokens/s |",
        f"| training time | {f['train_seconds']:.1f} s |", "",
        "![loss curve](pretrain/loss.png)", "",
        f"The model folder `{Path(f['model_dir']).name}/` is a Hugging Face folder "
        "(config.json, model.safetensors, tokenizer files, meta.json lineage).",
    ]


def _long_context(f: dict) -> list[str]:
    v = f["val_loss_at_long"]
    return [
        f"Context extension from {f['base_seq_len']} to {f['long_seq_len']} tokens: RoPE base "
        f"raised to {f['rope_theta']:,.0f}, {f['steps']} steps of continued training "
        f"({f['tokens_trained']:,} tokens, {f['train_seconds']:.0f} s). Both models are kept "
        "(`model/` and `model_long/`).", "",
        f"| model | validation loss at {f['long_seq_len']} tokens |", "|---|---:|",
        f"| `model/` (trained at {f['base_seq_len']}) | {v['model']:.3f} |",
        f"| `model_long/` (extended) | {v['model_long']:.3f} |", "",
        "![loss curve](pretrain_long/loss.png)",
    ]


def _sample(f: dict) -> list[str]:
    p = f["fact_probe"]
    lines = ["Greedy continuations from the reference KV-cache generation loop:", ""]
    for s in f["samples"]:
        expected = f" (expected `{s['expected']}`)" if "expected" in s else ""
        prompt = s["prompt"].replace("\n", " ⏎ ")
        lines.append(f"- `{prompt}` → `{s['continuation'].strip()}`{expected}")
    lines += ["", "Fact probe (exact match, greedy, questions in the training Q&A wording): "
              f"train people {p['train']['exact_match']:.0%} of {p['train']['questions']}, "
              f"held-out people {p['heldout']['exact_match']:.0%} of "
              f"{p['heldout']['questions']} (their Q&A was never in the pretraining text; "
              "the evaluation stage measures this properly)."]
    return lines


def _serve(f: dict) -> list[str]:
    lines = [f"`fullchain serve` on the demo model (`{f['model']}`), driven by the official "
             "`openai` client over loopback (greedy; the last reply streamed):", ""]
    for t in f["transcript"]:
        how = "streamed, " if t["streamed"] else ""
        lines += [f"> **user:** {t['user']}", ">",
                  f"> **assistant:** {t['assistant'].strip() or '(empty)'}", "",
                  f"({how}{t['tokens']} tokens, {t['seconds']} s)", ""]
    return lines


def _quantize(f: dict) -> list[str]:
    lines = ["The demo model in the engine with int8 weights (one scale per row; the embedding "
             "too, one table with the tied LM head) against fp32: loss on "
             f"{f['windows']} held-out windows of {f['window_tokens']} tokens (the engine's "
             "scoring), batch-1 greedy decode of 128 tokens (no HTTP).", "",
             "| weights | weights MB | held-out loss | decode tokens/s |",
             "|---|---:|---:|---:|"]
    for name in ("float32", "int8"):
        r = f[name]
        lines.append(f"| {name} | {r['weight_mb']:.1f} | {r['val_loss']:.5f} | "
                     f"{r['decode_tokens_per_s']:.0f} |")
    return lines + [""]


def _gguf(f: dict) -> list[str]:
    if "skipped" in f:
        return [f"Skipped: {f['skipped']}", ""]
    lines = ["The demo model written by `fullchain gguf` for llama.cpp, and run by llama.cpp "
             "(llama-cpp-python): its loss on the quantize stage's held-out windows "
             "(teacher-forced, its own logits) and whether it tokenizes those windows' text "
             "into our ids.", ""]
    if "llama_cpp" in f:
        return lines + [f"llama.cpp: {f['llama_cpp']}; files: "
                        + ", ".join(f"{f[t]['file']} ({f[t]['mb']:.1f} MB)"
                                    for t in ("f32", "q8_0")), ""]
    lines += ["| GGUF | MB | llama.cpp held-out loss | same tokens |", "|---|---:|---:|---:|"]
    for t in ("f32", "q8_0"):
        r = f[t]
        lines.append(f"| {t} | {r['mb']:.1f} | {r['llama_cpp_val_loss']:.5f} | "
                     f"{r['same_tokens']} of {f['texts']} |")
    return lines + [""]


SECTIONS = {"world": _world, "data": _data, "tokenizer": _tokenizer, "tokenize": _tokenize,
            "pretrain": _pretrain, "long_context": _long_context, "sample": _sample,
            "serve": _serve, "quantize": _quantize, "gguf": _gguf}


def write_report(out: Path, results: dict[str, Any]) -> Path:
    lines = [
        "# fullchain demo report", "",
        f"fullchain {results['fullchain_version']}, torch {results['torch']}, "
        f"python {results['python']}, {results['threads']} threads; "
        f"{'quick' if results['quick'] else 'full'} run in "
        f"{results.get('total_seconds', 0):.0f} s.",
        "", "| stage | seconds |", "|---|---:|",
        *[f"| {name} | {f['stage_seconds']:.1f} |" for name, f in results["stages"].items()], "",
    ]
    for name, figures in results["stages"].items():
        lines += [f"## {name}", ""]
        render = SECTIONS.get(name)
        lines += render(figures) if render else [f"`{figures}`"]
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
