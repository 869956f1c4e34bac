"""A pretraining run killed with SIGKILL after a checkpoint and resumed logs the same per-step
losses as an uninterrupted run, bit for bit (CPU, one process)."""

import signal
import time

import pytest


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tokens, runs):
    runs.finish(runs.pretrain(tmp_path / "full", tokens))
    runs.kill_after_checkpoint(runs.pretrain(tmp_path / "killed", tokens), tmp_path / "killed")
    runs.finish(runs.pretrain(tmp_path / "killed", tokens))
    assert runs.losses(tmp_path / "killed") == runs.losses(tmp_path / "full")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits(tmp_path, tokens, runs):
    proc = runs.pretrain(tmp_path / "run", tokens, "--train.save_every", "100")
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while (not metrics.exists() or len(metrics.read_text().splitlines()) < 3) and \
            time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "stopped by SIGTERM" in err.decode()
    saved = list((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert len(saved) == 1 and 3 <= int(saved[0].name.split("-")[1]) < 12
    runs.finish(runs.pretrain(tmp_path / "run", tokens, "--train.save_every", "100"))
    assert [s for s, *_ in runs.losses(tmp_path / "run")] == list(range(1, 13))
