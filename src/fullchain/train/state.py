"""Training checkpoints: a consolidated HF folder plus `trainer_state/`.

`trainer_state/dcp/` holds model and optimizer state sharded by `torch.distributed.checkpoint`
(so a run can resume at another world size), `state.json` the step and the loader position, and
`rng-rank<R>.pt` each rank's RNG. A checkpoint is written to `step-N.tmp` and renamed into place,
so a crash or a full disk while saving leaves the previous checkpoint intact; the newest `keep`
are kept.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from fullchain.checkpoint.io import save_state_dict
from fullchain.config import FullchainError
from fullchain.train.parallel import World

log = logging.getLogger(__name__)
STATE_JSON = "trainer_state/state.json"


def checkpoints(out: Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    root = out / "checkpoints"
    found = [p for p in root.glob("step-*") if not p.name.endswith(".tmp")
             and (p / STATE_JSON).exists()] if root.exists() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


@contextmanager
def _single_process_quiet():
    """DCP warns that it saves "in a single process" when no process group exists: intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def full_model_state(loss_model, world: World) -> dict[str, torch.Tensor]:
    """HF-named full weights on CPU (gathered from shards; complete on rank 0)."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(loss_model, options=opts)
    return {k.removeprefix("model."): v for k, v in state.items()}


def save_checkpoint(out: Path, step: int, loss_model, opt, loader, tok, *, world: World,
                    keep: int) -> Path:
    """Every rank writes its shard; rank 0 writes the HF folder and renames the whole into place.

    A write error (a full disk) removes the partial `.tmp` and raises FullchainError; the
    previous checkpoint is untouched.
    """
    try:
        return _save(out, step, loss_model, opt, loader, tok, world=world, keep=keep)
    except OSError as e:
        tmp = out / "checkpoints" / f"step-{step:06d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        raise FullchainError(f"could not write checkpoint {tmp.with_suffix('')}: {e}; the "
                             "previous checkpoint is intact (free space, then rerun to "
                             "resume)") from e


def _save(out: Path, step: int, loss_model, opt, loader, tok, *, world: World,
          keep: int) -> Path:
    final = out / "checkpoints" / f"step-{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "trainer_state").mkdir(parents=True)
    _barrier(world)
    model_sd, optim_sd = get_state_dict(loss_model, opt)
    with _single_process_quiet():
        dcp.save({"model": model_sd, "optim": optim_sd},
                 checkpoint_id=tmp / "trainer_state" / "dcp")
    torch.save(_rng_state(), tmp / "trainer_state" / f"rng-rank{world.rank}.pt")
    weights = full_model_state(loss_model, world)
    if world.is_main:
        model = loss_model.module if hasattr(loss_model, "module") else loss_model
        save_state_dict(weights, model.model.config, tmp)
        tok.save(tmp)
        state = {"step": step, "loader": loader.state_dict(), "world_size": world.size}
        (tmp / STATE_JSON).write_text(json.dumps(state, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier(world)
    return final


def resume_latest(out: Path, loss_model, opt, loader, *, world: World) -> int:
    """Restore the newest checkpoint under `out`; return its step (0 when there is none).

    Works at another world size than the one that saved: DCP reshards model and optimizer.
    """
    found = checkpoints(out)
    if not found:
        return 0
    ckpt = found[-1]
    state = json.loads((ckpt / STATE_JSON).read_text())
    model_sd, optim_sd = get_state_dict(loss_model, opt)
    with _single_process_quiet():
        dcp.load({"model": model_sd, "optim": optim_sd},
                 checkpoint_id=ckpt / "trainer_state" / "dcp")
    set_state_dict(loss_model, opt, model_state_dict=model_sd, optim_state_dict=optim_sd)
    loader.load_state_dict(state["loader"])
    rng_file = ckpt / "trainer_state" / f"rng-rank{world.rank}.pt"
    if not rng_file.exists():  # resumed on more ranks than saved: reuse rank 0's streams
        rng_file = ckpt / "trainer_state" / "rng-rank0.pt"
    rng = torch.load(rng_file, weights_only=False)
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if world.is_main:
        log.info("resumed from %s (step %d, saved by %d process(es))", ckpt, state["step"],
                 state["world_size"])
    return int(state["step"])
