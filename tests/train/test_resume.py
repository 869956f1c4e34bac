"""A pretraining run killed with SIGKILL after a checkpoint and resumed logs the same per-step
losses as an uninterrupted run, bit for bit (CPU, one process)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fullchain.data.tokenize import tokenize_documents, train_tokenizer
from fullchain.world import WorldConfig, write_world


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    write_world(root / "world", WorldConfig.preset("quick"))
    docs = [root / "world" / "documents.jsonl"]
    train_tokenizer(docs, root / "tok", vocab_size=512)
    tokenize_documents(docs, root / "tok", root / "tokens", val_fraction=0.05)
    return root / "tokens"


def pretrain(out, tokens, *extra):
    args = [sys.executable, "-m", "fullchain", "pretrain", "--out", str(out),
            "--data.path", str(tokens), "--data.seq_len", "64", "--train.batch_size", "4",
            "--train.max_steps", "12", "--train.save_every", "4", "--train.eval_every", "6",
            "--train.warmup_steps", "2", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r.get("val_loss")) for r in rows]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tokens):
    full = pretrain(tmp_path / "full", tokens)
    assert full.wait(timeout=300) == 0, full.stderr.read().decode()

    killed = pretrain(tmp_path / "killed", tokens)
    ckpt = tmp_path / "killed" / "checkpoints" / "step-000004" / "trainer_state" / "state.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert ckpt.exists()
    resumed = pretrain(tmp_path / "killed", tokens)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    summary = json.loads(resumed.stdout.read().decode())
    assert summary["resumed_from_step"] >= 4
    assert losses(tmp_path / "killed") == losses(tmp_path / "full")
