import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from fullchain.data.tokenize import tokenize_documents, train_tokenizer
from fullchain.world import WorldConfig, write_world


@pytest.fixture(scope="session")
def tokens(tmp_path_factory):
    """Token shards of the quick world with a 512-token BPE."""
    root = tmp_path_factory.mktemp("pretrain-data")
    write_world(root / "world", WorldConfig.preset("quick"))
    docs = [root / "world" / "documents.jsonl"]
    train_tokenizer(docs, root / "tok", vocab_size=512)
    tokenize_documents(docs, root / "tok", root / "tokens", val_fraction=0.05)
    return root / "tokens"


def pretrain(out, tokens, *extra, nproc: int = 1, batch: int = 8):
    """Start `fullchain pretrain` (under torchrun when nproc > 1) in its own process group."""
    launcher = [sys.executable, "-m", "fullchain"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", "-m", "fullchain"]
    args = [*launcher, "pretrain", "--out", str(out), "--data.path", str(tokens),
            "--data.seq_len", "64", "--train.batch_size", str(batch), "--train.max_steps", "12",
            "--train.save_every", "4", "--train.eval_every", "6", "--train.warmup_steps", "2",
            *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)


def finish(proc) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]


def losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r.get("val_loss")) for r in rows]


def kill_after_checkpoint(proc, out, step: int = 4) -> None:
    """SIGKILL the whole process group once checkpoint `step` is complete on disk."""
    state = out / "checkpoints" / f"step-{step:06d}" / "trainer_state" / "state.json"
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.exists()


@pytest.fixture(scope="session")
def runs():
    return SimpleNamespace(pretrain=pretrain, finish=finish, losses=losses,
                           kill_after_checkpoint=kill_after_checkpoint)
