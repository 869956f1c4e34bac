"""The data stage's throughput: documents/s of each step of `fullchain data`, with 1 and N workers.

The corpus is written once to ``--corpus``: the embedded world's documents (``fullchain.world``:
English and Chinese biographies, Q&A, arithmetic, city pages) and generated web-like pages —
English prose (over the data tests' vocabulary) between navigation and cookie boilerplate
lines, with a repeated share line, e-mail addresses, phone numbers and IPs; some Chinese pages,
some French ones, spam and near-empty pages, exact and near duplicates of earlier pages, and
forum posts quoting held-out eval questions. The world takes up to 30% of ``--docs``.

The real pipeline then runs, in a fresh process per worker count, with every step — normalize,
langid, quality, pii, decontaminate (against the world's eval questions), exact_dedup,
fuzzy_dedup, score (a tiny random fullchain model built here; ``--no-score`` leaves it out) —
and tokenization (a BPE trained on the output). Every document goes through every step (no
``skip_sources``, unlike the demo), so each step's documents in are documents it worked on; the
steps drop much of the world's synthetic text as they would web text. Printed, never asserted:
per step, the documents in and docs/s per core (the step's seconds summed over its workers,
from stats.json), the total over all steps, the tokenizer figures (wall clock), and the
end-to-end wall clock with the worker-scaling ratio. It first prints how many cores are free
(on a shared machine, 2 workers may get the time of one).

Usage: python bench/bench_data.py [--docs 20000] [--workers 1 2] [--no-score]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
from conftest import WORDS  # noqa: E402  (the data tests' vocabulary)

FILES = 16  # corpus files; the pipeline makes about one shard per file
BOILERPLATE = ["Home | About | Contact | Login", "Skip to main content",
               "This site uses cookies to improve your experience.", "Accept all cookies",
               "© 2024 Example Media Ltd. All rights reserved.", "Privacy | Terms | Sitemap"]
ZH = (("昨天", "今天早上", "每个周末", "去年春天", "晚上", "下课以后", "那一年", "最近"),
      ("老师", "孩子们", "游客", "工程师", "我的朋友", "这位医生", "学生们", "邻居", "作家",
       "农民"),
      ("去图书馆看书", "在公园里散步", "参观了博物馆", "讨论了城市的历史", "学习新的语言",
       "写了一封长信", "在河边钓鱼", "准备了丰盛的晚饭", "修好了旧自行车", "画了一幅山水画"),
      ("，大家都很高兴。", "，因为天气很好。", "，然后一起回家。", "，觉得很有意思。",
       "，没有人迟到。", "，留下了深刻的印象。"))
FR = ("Le chat dort sur la table de la cuisine pendant que les enfants jouent dans le jardin. "
      "La ville est calme le dimanche matin et les boulangeries ouvrent tôt.")


STOP = ("the", "of", "and", "to", "with", "that", "in", "for")


def english(rng: random.Random, n_sentences: int) -> str:
    """Prose that passes the quality filters: random words with stop words between them."""
    out = []
    for _ in range(n_sentences):
        ws = [rng.choice(WORDS) if rng.random() < 0.7 else rng.choice(STOP)
              for _ in range(rng.randint(8, 16))]
        out.append(" ".join(ws).capitalize() + rng.choice(".!?" if rng.random() < 0.1 else "."))
    return " ".join(out)


def _pii(rng: random.Random) -> str:
    user = "".join(rng.choice("abcdefghij") for _ in range(6))
    return (f"Questions? Write to {user}@example.com or call +1 415-555-{rng.randint(0, 9999):04d}"
            f" (server 10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}).")


def web_page(rng: random.Random) -> str:
    """An English page: boilerplate lines around prose paragraphs, a repeated share line and,
    on some pages, contact details to redact."""
    lines = rng.sample(BOILERPLATE[:3], 2)
    for _ in range(rng.randint(2, 6)):
        lines.append(english(rng, rng.randint(2, 5)))
        if rng.random() < 0.3:
            lines.append("Share this article with your friends and family today.")
    if rng.random() < 0.4:
        lines.append(_pii(rng))
    return "\n".join(lines + rng.sample(BOILERPLATE[3:], 2))


def _other_page(rng: random.Random, kind: str, pages: list[str], questions: list[str]) -> str:
    if kind == "zh":
        return "\n".join("".join(rng.choice(part) for part in ZH) for _ in range(rng.randint(3, 6)))
    if kind == "fr":
        return FR
    if kind == "spam":
        return "\n".join(["Buy cheap watches now, best prices online, free shipping!"] * 30)
    if kind == "short":
        return "Click here."
    if kind == "leak":
        return (f"{english(rng, 3)} Does anyone know the answer? {rng.choice(questions)} "
                f"{english(rng, 2)}")
    src = rng.choice(pages).split(" ")
    if kind == "near":
        for i in rng.sample(range(len(src)), max(1, len(src) // 50)):
            src[i] = rng.choice(src)
    return " ".join(src)


def _web_texts(n: int, questions: list[str], seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    kinds = ["page"] * 64 + ["zh"] * 8 + ["fr"] * 3 + ["spam"] * 3 + ["short"] * 3 + \
        ["exact"] * 10 + ["near"] * 8 + ["leak"] * 1
    pages: list[str] = []
    texts = []
    for _ in range(n):
        kind = rng.choice(kinds) if pages else "page"
        text = web_page(rng) if kind == "page" else _other_page(rng, kind, pages, questions)
        if kind == "page":
            pages.append(text)
        texts.append(text)
    return texts


def write_corpus(dir: Path, num_docs: int) -> None:
    """``dir/world`` (the world's files, its eval questions included) and ``dir/in/*.jsonl``."""
    from fullchain.world import WorldConfig, write_world
    write_world(dir / "world", WorldConfig(seed=1))
    world = (dir / "world" / "documents.jsonl").read_text("utf-8").splitlines()
    world = world[: int(0.3 * num_docs)]
    questions = [json.loads(line)["question"] for line in
                 (dir / "world" / "eval" / "heldout_qa.jsonl").read_text("utf-8").splitlines()]
    web = [json.dumps({"id": f"web-{i}", "text": t}, ensure_ascii=False)
           for i, t in enumerate(_web_texts(num_docs - len(world), questions))]
    rows = world + web
    random.Random(1).shuffle(rows)
    (dir / "in").mkdir(parents=True)
    for f in range(FILES):
        (dir / "in" / f"part-{f:02d}.jsonl").write_text(
            "".join(r + "\n" for r in rows[f::FILES]), encoding="utf-8")
    (dir / "done").write_text(str(num_docs))


def build_model(dir: Path, corpus: Path) -> None:
    """A tiny random fullchain model folder (the score step's timing does not depend on what
    the weights say), with a BPE trained on a sample of the corpus."""
    from fullchain.checkpoint import save_model
    from fullchain.model import ModelConfig, Transformer
    from fullchain.tokenizer import train_bpe
    sample = (corpus / "in" / "part-00.jsonl").read_text("utf-8").splitlines()[:2000]
    tok = train_bpe((json.loads(line)["text"] for line in sample), vocab_size=1024,
                    special_tokens=["<|endoftext|>"], bos_token=None,
                    eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    model = Transformer(ModelConfig(vocab_size=1024, hidden_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2,
                                    intermediate_size=172, max_position_embeddings=256))
    model.init_weights(seed=0)
    save_model(model, dir)
    tok.save(dir)


def pipeline_config(corpus: Path, out: Path, *, workers: int, score: bool) -> dict:
    steps = ["normalize", "langid", "quality", "pii", "decontaminate", "exact_dedup",
             "fuzzy_dedup"] + (["score"] if score else [])
    return {"input": {"paths": [str(corpus / "in")], "shard_mb": 0.5}, "out": str(out),
            "workers": workers, "progress": False, "steps": steps,
            "normalize": {"form": "NFC"}, "quality": {"min_words": 30},
            "decontaminate": {"eval_paths": [str(corpus / "world" / "eval")]},
            "score": {"model": str(corpus / "model") if score else "", "max_tokens": 128,
                      "batch_size": 16},
            "tokenize": {"enabled": True, "vocab_size": 2048}}


def run_one(config_path: Path) -> None:
    """In a fresh process: run the pipeline, print one JSON line (wall seconds and stats)."""
    from fullchain.config import load_config
    from fullchain.data.config import PipelineConfig
    from fullchain.data.pipeline import run
    cfg = load_config(PipelineConfig, data=json.loads(config_path.read_text()))
    start = time.perf_counter()
    stats = run(cfg)
    print(json.dumps({"wall_seconds": time.perf_counter() - start, "stats": stats}))


def measure(corpus: Path, workers: int, *, score: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-data-"))
    cfg = out / "config.json"
    cfg.write_text(json.dumps(pipeline_config(corpus, out / "run", workers=workers, score=score)))
    # one torch thread per process: the score step's docs/s is then per core
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--run", str(cfg)], capture_output=True,
                          text=True, env=env)
    shutil.rmtree(out)
    if proc.returncode != 0:
        raise SystemExit(f"the pipeline failed with {workers} workers:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _spin(_: int) -> float:
    start = time.process_time()
    x = 0
    for i in range(10_000_000):
        x += i
    return time.process_time() - start


def free_cores(n: int) -> float:
    """How many of ``n`` processes run at once right now: n spinning processes' CPU seconds over
    the wall clock they took (a shared machine lends fewer cores than it has)."""
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(n) as pool:
        list(pool.map(_spin, range(n)))  # start the processes
        start = time.perf_counter()
        cpu = sum(pool.map(_spin, range(n)))
    return cpu / (time.perf_counter() - start)


def _per_core(docs: int, seconds: float | None) -> str:
    return f"{docs / seconds:,.0f}" if seconds else "-"


def report(results: dict[int, dict]) -> None:
    counts = list(results)
    first = results[counts[0]]["stats"]
    cols = " | ".join(f"docs/s per core, {w} worker{'s' * (w > 1)}" for w in counts)
    print(f"\n| step | docs in | {cols} |\n|---|---:|" + "---:|" * len(counts))
    for i, row in enumerate(first["steps"]):
        rates = []
        for w in counts:
            r = results[w]["stats"]["steps"][i]
            rates.append(f"(in {r['timed_with']})" if "timed_with" in r
                         else _per_core(r["docs_in"], r.get("seconds")))
        print(f"| {row['step']} | {row['docs_in']:,} | {' | '.join(rates)} |")
    docs = first["steps"][0]["docs_in"]
    totals = [_per_core(docs, sum(r.get("seconds", 0.0) for r in results[w]["stats"]["steps"]))
              for w in counts]
    print(f"| **all steps** | {docs:,} | {' | '.join(totals)} |")
    tok = {w: results[w]["stats"]["tokens"] for w in counts}
    print(f"\ntokenize ({tok[counts[0]]['num_documents']:,} documents, "
          f"{tok[counts[0]]['num_tokens']:,} tokens), wall clock: " + "; ".join(
              f"{w} worker(s): BPE training {t['seconds']['train_tokenizer']:.1f} s, encoding "
              f"{t['num_documents'] / t['seconds']['tokenize']:,.0f} docs/s"
              for w, t in tok.items()))
    walls = {w: results[w]["wall_seconds"] for w in counts}
    print("end to end, wall clock: " + "; ".join(
        f"{w} worker(s) {s:.1f} s = {docs / s:,.0f} docs/s" for w, s in walls.items()))
    for w in counts[1:]:
        print(f"worker scaling: {w} workers are {walls[counts[0]] / walls[w]:.2f}x as fast as "
              f"{counts[0]} end to end")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-score", action="store_true", help="leave the score step out")
    ap.add_argument("--corpus", type=Path, default=None, help="default: /tmp/data-corpus-N")
    ap.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        return run_one(args.run)
    corpus = args.corpus or Path(tempfile.gettempdir()) / f"data-corpus-{args.docs}"
    if not ((corpus / "done").exists() and (corpus / "done").read_text() == str(args.docs)):
        shutil.rmtree(corpus, ignore_errors=True)
        start = time.perf_counter()
        write_corpus(corpus, args.docs)
        build_model(corpus / "model", corpus)
        print(f"corpus: {args.docs:,} documents in {corpus} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    print(f"free cores now: {free_cores(max(args.workers)):.2f} of {max(args.workers)} asked "
          "(processes spinning at once)", flush=True)
    results = {}
    for workers in args.workers:
        results[workers] = measure(corpus, workers, score=not args.no_score)
        print(f"{workers} worker(s): {results[workers]['wall_seconds']:.1f} s", flush=True)
    report(results)


if __name__ == "__main__":
    main()
