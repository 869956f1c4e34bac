"""Bad input and faults: refused before training starts, or stopped with the last good
checkpoint intact."""

import errno
import shutil

import numpy as np
import pytest
import torch

from fullchain.config import DataError, FullchainError, load_config
from fullchain.tokenizer import train_bpe
from fullchain.train import pretrain as pretrain_mod
from fullchain.train import state as state_mod
from fullchain.train.pretrain import PretrainConfig, run


def config(tmp_path, tokens, **train):
    overrides = [f"--train.{k}={v}" for k, v in {"max_steps": 6, "save_every": 2,
                                                 "eval_every": 3, "batch_size": 4,
                                                 "warmup_steps": 1, "tensorboard": False,
                                                 **train}.items()]
    return load_config(PretrainConfig, overrides=[
        f"out={tmp_path / 'run'}", f"--data.path={tokens}", "--data.seq_len=32", *overrides])


def test_shards_from_another_tokenizer_are_refused(tmp_path, tokens):
    other = tmp_path / "tokens"
    shutil.copytree(tokens, other)
    train_bpe(["completely different text"] * 50, vocab_size=300,
              special_tokens=["<|endoftext|>"], eos_token="<|endoftext|>").save(other / "tokenizer")
    with pytest.raises(DataError, match="tokenizer"):
        run(config(tmp_path, other))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resuming_on_other_token_data_is_refused(tmp_path, tokens):
    from fullchain.data.tokenize import tokenize_documents
    from fullchain.train.data import DataChangedError
    run(config(tmp_path, tokens, max_steps=2))
    other = tmp_path / "other"  # the same documents and tokenizer, another train/val split
    tokenize_documents([tokens.parent / "world" / "documents.jsonl"], tokens.parent / "tok",
                       other, val_fraction=0.2)
    with pytest.raises(DataChangedError, match=f"{other / 'train.bin'} is not the token data"):
        run(config(tmp_path, other, max_steps=4))
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-000002"]
    assert run(config(tmp_path, tokens, max_steps=4))["steps"] == 4  # its own data resumes


def test_token_id_beyond_vocab_names_the_shard(tmp_path, tokens):
    bad = tmp_path / "tokens"
    shutil.copytree(tokens, bad)
    data = np.fromfile(bad / "train.bin", dtype="<u4")
    data[10] = 10**6
    data.tofile(bad / "train.bin")
    with pytest.raises(DataError, match="train.bin"):
        run(config(tmp_path, bad))


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, tokens, monkeypatch):
    calls = {"n": 0}
    real = pretrain_mod.loss_on

    def poisoned(loss_model, *args, **kwargs):
        loss = real(loss_model, *args, **kwargs)
        if not loss_model.training:
            return loss
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 4 else loss
    monkeypatch.setattr(pretrain_mod, "loss_on", poisoned)
    with pytest.raises(FullchainError, match="loss is nan at step 4"):
        run(config(tmp_path, tokens))
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert saved == ["step-000002"]
    from fullchain.checkpoint import load_model  # the kept checkpoint is a loadable HF folder
    model = load_model(tmp_path / "run" / "checkpoints" / "step-000002")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_full_disk_while_saving_keeps_previous_checkpoint(tmp_path, tokens, monkeypatch):
    real = state_mod.save_state_dict
    calls = {"n": 0}

    def full_disk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)
    monkeypatch.setattr(state_mod, "save_state_dict", full_disk)
    with pytest.raises(FullchainError, match="No space left.*previous checkpoint is intact"):
        run(config(tmp_path, tokens))
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "step-000002" / "trainer_state" / "state.json").exists()
    assert not (ckpts / "step-000004").exists()
    monkeypatch.setattr(state_mod, "save_state_dict", real)
    summary = run(config(tmp_path, tokens))  # the rerun resumes from step 2
    assert summary["resumed_from_step"] == 2 and summary["steps"] == 6
    again = run(config(tmp_path, tokens))  # a finished run rerun trains nothing ...
    assert again["resumed_from_step"] == 6
    for key in ("steps", "tokens_trained", "first_loss", "final_loss", "val_loss", "tokens_per_s",
                "train_seconds"):  # ... and reports the whole run, as the first one did
        assert again[key] == pytest.approx(summary[key]), key


def test_metrics_jsonl_tensorboard_and_curve(tmp_path, tokens):
    summary = run(config(tmp_path, tokens, tensorboard=True, max_steps=3, eval_every=3))
    out = tmp_path / "run"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "loss.png").stat().st_size > 5000
    first = (out / "metrics.jsonl").read_text().splitlines()[0]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
        assert key in first
    assert 0 < summary["mfu"] < 1.5


def test_summary_counts_each_invocations_batch():
    """A run resumed with another batch size: its tokens and seconds are summed per step as
    logged, not re-derived from the last invocation's batch; older records (tokens/s only)
    count the given batch."""
    from fullchain.train.pretrain import summarize
    records = [{"step": 1, "loss": 5.0, "tokens": 1000, "seconds": 2.0, "tokens_per_s": 500.0},
               {"step": 2, "loss": 4.0, "tokens": 4000, "seconds": 4.0, "tokens_per_s": 1000.0},
               {"step": 3, "loss": 3.5, "tokens_per_s": 2000.0}]
    summary = summarize(records, start_step=1, wall_seconds=9.0, tokens_per_step=4000)
    assert summary["tokens_trained"] == 9000
    assert summary["train_seconds"] == pytest.approx(8.0)
    assert summary["tokens_per_s"] == pytest.approx(9000 / 8.0)
