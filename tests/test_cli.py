"""`python -m fullchain ...` end to end: results on stdout, a bad input is one `error:` line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fullchain.checkpoint import save_model
from fullchain.checkpoint.pretrained import load_pretrained
from fullchain.formats.tokens import TokenDataset
from fullchain.generate import SamplingParams, generate_text
from fullchain.model import ModelConfig, Transformer
from fullchain.tokenizer import Tokenizer, train_bpe

TEXTS = [f"the quick brown fox number {i} jumps over the lazy dog and runs home" for i in range(50)]
PROMPT = "the quick brown fox"


def fullchain(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    """Run the real console entry point; text is UTF-8 whatever the locale."""
    # the same intra-op thread count as this process, so float sums (and so sampled tokens)
    # match the in-process reference exactly
    threads = str(torch.get_num_threads())
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": threads}
    return subprocess.run([sys.executable, "-m", "fullchain", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, encoding="utf-8", timeout=300)


def save_tiny(folder: Path, tok: Tokenizer, *, vocab_size: int) -> Transformer:
    cfg = ModelConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                      max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    model = Transformer(cfg)
    model.init_weights(seed=5)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # sharp logits: greedy output varies instead of looping
    save_model(model, folder)
    tok.save(folder)
    return model


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_bpe(TEXTS, vocab_size=300, special_tokens=["<|begin_of_text|>", "<|endoftext|>"],
                     bos_token="<|begin_of_text|>", eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok) -> Path:
    """One tiny model folder (weights + tokenizer) shared by the tests of this module."""
    folder = tmp_path_factory.mktemp("cli") / "model"
    save_tiny(folder, tok, vocab_size=tok.vocab_size)
    return folder


def reference(folder: Path, params: SamplingParams) -> str:
    model, tok = load_pretrained(folder)
    ids = tok.encode(PROMPT, add_special_tokens=True)
    return "".join(generate_text(model, tok, ids, params))


def test_generate_prints_only_the_continuation(model_dir, tok, tmp_path):
    greedy = reference(model_dir, SamplingParams(max_new_tokens=12, temperature=0.0,
                                                 stop_token_ids=tok.stop_token_ids))
    assert greedy  # else the comparison below proves nothing
    run = fullchain("generate", model_dir, "--prompt", PROMPT, "--max-new-tokens", 12,
                    "--temperature", 0, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == greedy + "\n"
    assert "Traceback" not in run.stderr


def test_generate_with_a_seed_is_reproducible(model_dir, tok, tmp_path):
    args = ("generate", model_dir, "--prompt", PROMPT, "--max-new-tokens", 12,
            "--temperature", 0.8, "--seed", 3)
    first, second = fullchain(*args, cwd=tmp_path), fullchain(*args, cwd=tmp_path)
    assert first.returncode == second.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    sampled = reference(model_dir, SamplingParams(max_new_tokens=12, temperature=0.8, seed=3,
                                                  stop_token_ids=tok.stop_token_ids))
    assert first.stdout == sampled + "\n"


def test_info_prints_the_parameter_count(model_dir, tmp_path):
    model, _ = load_pretrained(model_dir)
    num_params = sum(p.numel() for p in model.parameters())
    run = fullchain("info", model_dir, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    line = next(line for line in run.stdout.splitlines() if "parameters" in line)
    assert f"{num_params:,}" in line


# Each bad input: (command-line arguments, substrings the one error line must hold).

def missing_folder(tmp: Path, model_dir: Path, tok: Tokenizer):
    return ["generate", tmp / "nope", "--prompt", "x"], [str(tmp / "nope")]


def missing_weights(tmp: Path, model_dir: Path, tok: Tokenizer):
    folder = shutil.copytree(model_dir, tmp / "model")
    (folder / "model.safetensors").unlink()
    return ["generate", folder, "--prompt", "x"], ["model.safetensors", str(folder)]


def truncated_weights(tmp: Path, model_dir: Path, tok: Tokenizer):
    folder = shutil.copytree(model_dir, tmp / "model")
    weights = folder / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    return ["generate", folder, "--prompt", "x"], [str(weights), "truncated"]


def tokenizer_larger_than_vocab(tmp: Path, model_dir: Path, tok: Tokenizer):
    save_tiny(tmp / "model", tok, vocab_size=tok.vocab_size - 20)
    return (["generate", tmp / "model", "--prompt", "x"],
            ["tokenizer", f"{tok.vocab_size} tokens", "vocab_size"])


def unknown_yaml_key(tmp: Path, model_dir: Path, tok: Tokenizer):
    (tmp / "bad.yaml").write_text("train: {max_stepz: 3}\n")
    return ["pretrain", "--config", tmp / "bad.yaml"], ["train.max_stepz", "bad.yaml"]


def bad_override_value(tmp: Path, model_dir: Path, tok: Tokenizer):
    return ["pretrain", "--train.lr", "abc"], ["train.lr", "abc"]


def unknown_architecture(tmp: Path, model_dir: Path, tok: Tokenizer):
    folder = shutil.copytree(model_dir, tmp / "model")
    config = json.loads((folder / "config.json").read_text())
    config.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    (folder / "config.json").write_text(json.dumps(config))
    return ["generate", folder, "--prompt", "x"], [str(folder / "config.json"), "GPT2LMHeadModel"]


BAD_INPUTS = [missing_folder, missing_weights, truncated_weights, tokenizer_larger_than_vocab,
              unknown_yaml_key, bad_override_value, unknown_architecture]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda case: case.__name__)
def test_bad_input_is_one_error_line(case, model_dir, tok, tmp_path):
    args, named = case(tmp_path, model_dir, tok)
    run = fullchain(*args, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    for text in named:
        assert text in lines[0]


def test_world_tokenizer_tokenize_chain(tmp_path):
    world, tok_dir, tokens = tmp_path / "world", tmp_path / "tok", tmp_path / "tokens"
    documents = world / "documents.jsonl"
    for args in (["world", "--out", world, "--preset", "quick"],
                 ["tokenizer", "--documents", documents, "--vocab-size", 512, "--out", tok_dir],
                 ["tokenize", "--documents", documents, "--tokenizer", tok_dir, "--out", tokens]):
        run = fullchain(*args, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr
    summary = json.loads(run.stdout)  # tokenize prints its summary as JSON
    tok = Tokenizer.from_dir(tok_dir)
    assert tok.vocab_size == 512
    assert Tokenizer.from_dir(tokens / "tokenizer").content_hash() == tok.content_hash()
    splits = [TokenDataset(tokens, split) for split in ("train", "val")]
    for data in splits:
        data.validate()
        data.check_compatible(tok.content_hash(), tok.vocab_size)
    assert len(splits[0]) > 0
    assert sum(data.num_tokens for data in splits) == summary["num_tokens"]


def test_chat_streams_replies_and_resets_history(tmp_path):
    from fullchain.tokenizer import get_builtin_template
    chat_tok = train_bpe(TEXTS, vocab_size=300,
                         special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                         eos_token="<|endoftext|>")
    chat_tok.chat_template = get_builtin_template("chatml")
    folder = tmp_path / "chat-model"
    save_tiny(folder, chat_tok, vocab_size=chat_tok.vocab_size)
    threads = str(torch.get_num_threads())
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": threads}
    result = subprocess.run(
        [sys.executable, "-m", "fullchain", "chat", folder, "--max-new-tokens", "8"],
        input="the quick brown fox\n/reset\nthe quick brown fox\n/exit\n", env=env, cwd=tmp_path,
        capture_output=True, encoding="utf-8", timeout=300)
    assert result.returncode == 0, result.stderr
    replies = [line.split("model> ", 1)[1] for line in result.stdout.splitlines()
               if "model> " in line]
    assert len(replies) == 2 and replies[0] == replies[1]  # /reset: same history, same reply
    model, tok = load_pretrained(folder)
    ids = tok.apply_chat_template([{"role": "user", "content": "the quick brown fox"}],
                                  add_generation_prompt=True, tokenize=True)
    expected = "".join(generate_text(model, tok, ids, SamplingParams(
        max_new_tokens=8, stop_token_ids=tok.stop_token_ids)))
    assert expected.strip() and replies[0] == expected.split("\n")[0]


def _thp_heap_applies() -> bool:
    lib, version = __import__("platform").libc_ver()
    try:
        thp = "[never]" not in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
        return lib == "glibc" and tuple(int(p) for p in version.split(".")[:2]) >= (2, 35) and thp
    except (OSError, ValueError):
        return False


def test_huge_page_heap_env_adds_the_tunable_once():
    from fullchain.cli import huge_page_heap_env
    env = huge_page_heap_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "b"})
    if not _thp_heap_applies():
        assert env is None
        return
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "A": "b"}
    assert huge_page_heap_env(env) is None  # set already: the rerun does not run again
    assert huge_page_heap_env({"FULLCHAIN_HUGE_PAGES": "0"}) is None
    assert huge_page_heap_env({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("opt_out", [False, True])
def test_the_command_runs_itself_again_with_the_huge_page_heap(tmp_path, opt_out):
    # what the command's process sees, printed before and after it reruns itself
    code = ("import os, sys; print('tunables', os.environ.get('GLIBC_TUNABLES'), flush=True); "
            "sys.argv = ['fullchain', '--help']; from fullchain.cli import command; command()")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if opt_out:
        env["FULLCHAIN_HUGE_PAGES"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    seen = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("tunables")]
    rerun = _thp_heap_applies() and not opt_out
    assert seen == (["None", "glibc.malloc.hugetlb=1"] if rerun else ["None"])
    assert "usage: fullchain" in out


def test_main_called_from_python_never_reruns_the_interpreter():
    code = ("import os, sys; print('tunables', os.environ.get('GLIBC_TUNABLES'), flush=True); "
            "sys.argv = ['fullchain', '--help']; from fullchain.cli import main; main()")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120).stdout
    assert [line for line in out.splitlines() if line.startswith("tunables")] == ["tunables None"]
