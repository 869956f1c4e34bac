"""Training checkpoints: an HF folder plus `trainer_state/` (optimizer, step, loader, RNG).

A checkpoint is written to `step-N.tmp` and renamed into place, so a crash while saving leaves the
previous checkpoint intact; only the newest `keep` are kept.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from fullchain.checkpoint import iter_tensors, save_model

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state/state.pt"


def checkpoints(out: Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    root = out / "checkpoints"
    found = [p for p in root.glob("step-*") if not p.name.endswith(".tmp")
             and (p / STATE_FILE).exists()] if root.exists() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(out: Path, step: int, model, opt, loader, tok, *, keep: int) -> Path:
    final = out / "checkpoints" / f"step-{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tmp)
    tok.save(tmp)
    (tmp / "trainer_state").mkdir()
    state = {"step": step, "optimizer": opt.state_dict(), "loader": loader.state_dict(),
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                     "python": random.getstate(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}
    torch.save(state, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resume_latest(out: Path, model, opt, loader) -> int:
    """Restore the newest checkpoint under `out`; return its step (0 when there is none)."""
    found = checkpoints(out)
    if not found:
        return 0
    ckpt = found[-1]
    device = next(model.parameters()).device
    weights = {k: v.to(device) for k, v in iter_tensors(ckpt)}
    missing, _ = model.load_state_dict(weights, strict=False)
    assert set(missing) <= {"lm_head.weight"}, missing
    state = torch.load(ckpt / STATE_FILE, weights_only=False)
    opt.load_state_dict(state["optimizer"])
    loader.load_state_dict(state["loader"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    if state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    log.info("resumed from %s (step %d)", ckpt, state["step"])
    return int(state["step"])
