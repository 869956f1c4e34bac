"""`fullchain pretrain`: packed, document-masked causal-LM training on token shards.

A recipe in the torchtune sense: setup -> build -> fit -> save, top to bottom in `run()`.
Writes an HF model folder, periodic checkpoints with their training state, metrics.jsonl and a
loss-curve PNG. A run pointed at an output folder with checkpoints resumes from the latest.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from fullchain.checkpoint import load_model
from fullchain.config import FullchainError, config_to_dict, dump_config, require
from fullchain.formats.lineage import make_lineage, write_meta
from fullchain.formats.tokens import TokenDataset
from fullchain.model import DocumentAttention, Transformer, causal, preset
from fullchain.model.memory import keep_freed_memory
from fullchain.tokenizer import Tokenizer
from fullchain.train.data import Batch, MixtureLoader, PackedLoader
from fullchain.train.faults import StopFlag, stop_on_signals
from fullchain.train.metrics import (
    MetricsLog,
    log_tensorboard,
    matmul_peak,
    plot_losses,
    progress_bar,
    tensorboard_writer,
    train_flops_per_token,
)
from fullchain.train.optim import build_optimizer, lr_at
from fullchain.train.parallel import (
    World,
    grad_norm_clip,
    init_world,
    mean_across,
    shutdown,
    wrap,
)
from fullchain.train.state import checkpoints, resume_latest, save_checkpoint

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ModelSection:
    preset: str = "tiny"
    init_from: Path | None = None  # an HF folder to continue from instead of a fresh init
    max_position_embeddings: int | None = None
    rope_theta: float | None = None


@dataclass(kw_only=True)
class DataSection:
    path: Path = Path("tokens")
    mixture: dict[str, float] = field(default_factory=dict)  # more token dirs -> weights
    weight: float = 1.0  # the weight of `path` when a mixture is given
    tokenizer: Path | None = None  # defaults to <path>/tokenizer
    seq_len: int = 256
    document_mask: bool = True
    reset_positions: bool = True

    def __post_init__(self) -> None:
        require(self.seq_len >= 8, "seq_len", f"must be >= 8, got {self.seq_len}")


@dataclass(kw_only=True)
class TrainSection:
    batch_size: int = 16
    grad_accum: int = 1
    max_steps: int = 500
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: str = "auto"
    seed: int = 0
    parallel: Literal["auto", "none", "ddp", "fsdp"] = "auto"  # auto: FSDP2 under torchrun
    activation_checkpointing: bool = False
    compile: bool = False
    # on the CPU (glibc), keep freed memory in the process rather than re-faulting the pages of
    # every fresh activation (see fullchain.model.memory.keep_freed_memory)
    keep_freed_memory: bool = True
    peak_tflops: float | None = None  # for MFU; measured (a GEMM in the run's dtype) when unset
    tensorboard: bool = True  # when the tensorboard package is installed
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8
    save_every: int = 200
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        for key in ("batch_size", "grad_accum", "max_steps", "log_every", "eval_every",
                    "save_every", "keep_checkpoints"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}; try 3e-4")
        require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be within [0, 1]")


@dataclass(kw_only=True)
class PretrainConfig:
    out: Path = Path("runs/pretrain")
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)


def build_model(cfg: PretrainConfig, vocab_size: int, tok: Tokenizer) -> Transformer:
    """A fresh preset model, or an HF folder (with new RoPE settings for context extension)."""
    changes = {k: v for k, v in (("max_position_embeddings", cfg.model.max_position_embeddings),
                                 ("rope_theta", cfg.model.rope_theta)) if v is not None}
    if cfg.model.init_from is not None:
        model = load_model(cfg.model.init_from)
        if model.config.vocab_size < vocab_size:
            raise FullchainError(f"{cfg.model.init_from}: model vocab {model.config.vocab_size} < "
                                 f"token shards' vocab {vocab_size}")
        if changes:  # same weights, new RoPE settings (the rotary buffer is rebuilt)
            new = Transformer(model.config.replace(**changes))
            new.load_state_dict(model.state_dict())
            model = new
        return model
    mcfg = preset(cfg.model.preset, vocab_size=vocab_size, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **changes)
    model = Transformer(mcfg)
    model.init_weights(seed=cfg.train.seed)
    return model


def open_datasets(cfg: PretrainConfig, tok: Tokenizer) -> tuple[list, list[float], TokenDataset]:
    """Train shards of every source (checked against the tokenizer) and the validation shard."""
    paths = [Path(cfg.data.path), *map(Path, cfg.data.mixture)]
    weights = [cfg.data.weight, *cfg.data.mixture.values()]
    sets = []
    for path in paths:
        ds = TokenDataset(path, "train")
        ds.check_compatible(tok.content_hash(), tok.vocab_size)
        ds.validate()  # token ids >= vocab size fail here, naming the shard
        sets.append(ds)
    return sets, weights, TokenDataset(cfg.data.path, "val")


def build_loaders(cfg: PretrainConfig, world: World, sets: list, weights: list[float],
                  val: TokenDataset):
    """Loaders draw the GLOBAL batch (batch_size x world size); each rank keeps its own rows."""
    global_batch = cfg.train.batch_size * world.size
    loaders = [PackedLoader(ds, seq_len=cfg.data.seq_len, batch_size=global_batch,
                            seed=cfg.train.seed + i, reset_positions=cfg.data.reset_positions)
               for i, ds in enumerate(sets)]
    train = loaders[0] if len(loaders) == 1 else MixtureLoader(
        loaders, weights, batch_size=global_batch, seed=cfg.train.seed)
    step_rows = global_batch * cfg.train.grad_accum  # validation batches = one step's rows
    val_rows = max(1, min(step_rows, (val.num_tokens - 1) // cfg.data.seq_len))
    val_loader = PackedLoader(val, seq_len=cfg.data.seq_len, batch_size=val_rows, seed=0,
                              reset_positions=cfg.data.reset_positions, shuffle=False)
    return train, val_loader


def rank_rows(batch: Batch, world: World) -> Batch:
    if not world.distributed:
        return batch
    n = batch.input_ids.shape[0] // world.size
    part = slice(world.rank * n, (world.rank + 1) * n)
    return Batch(batch.input_ids[part], batch.targets[part], batch.positions[part],
                 batch.doc_ids[part])


def loss_on(loss_model: nn.Module, batch: Batch, *, document_mask: bool,
            device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    ids, targets = batch.input_ids.to(device), batch.targets.to(device)
    positions = batch.positions.to(device)
    attention = DocumentAttention(batch.doc_ids.to(device)) if document_mask else causal
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        return loss_model(ids, targets, positions, attention)


@torch.no_grad()
def evaluate(loss_model: nn.Module, loader: PackedLoader, cfg: PretrainConfig,
             device: torch.device, dtype: torch.dtype) -> float:
    """Mean loss over the first `eval_batches` windows of the validation shard (fixed order)."""
    loss_model.eval()
    loader.load_state_dict({"epoch": 0, "cursor": 0})
    batches = max(1, min(cfg.train.eval_batches, loader.num_windows // loader.batch_size))
    losses = [loss_on(loss_model, loader.next_batch(), document_mask=cfg.data.document_mask,
                      device=device, dtype=dtype).item() for _ in range(batches)]
    loss_model.train()
    return sum(losses) / len(losses)


@dataclass
class Run:
    """Everything one training run holds, passed explicitly between the recipe's steps."""

    cfg: PretrainConfig
    world: World
    tok: Tokenizer
    model: Transformer
    loss_model: nn.Module
    opt: torch.optim.Optimizer
    loader: PackedLoader | MixtureLoader
    val_loader: PackedLoader
    metrics: MetricsLog | None
    dtype: torch.dtype
    flops_per_token: float
    peak_flops: float
    writer: Any = None


def run(cfg: PretrainConfig) -> dict:
    """Train, checkpoint and export; returns a summary (losses, timings, sizes)."""
    # -- setup
    world = init_world(cfg.train.device)
    if cfg.train.keep_freed_memory and world.device.type == "cpu":
        keep_freed_memory()
    out = Path(cfg.out)
    tok_dir = cfg.data.tokenizer or Path(cfg.data.path) / "tokenizer"
    tok = Tokenizer.from_dir(tok_dir)
    sets, weights, val = open_datasets(cfg, tok)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / "config.yaml")
    dtype = torch.bfloat16 if cfg.train.dtype == "bfloat16" else torch.float32
    torch.manual_seed(cfg.train.seed)
    # -- build
    model = build_model(cfg, sets[0].vocab_size, tok).to(world.device).train()
    t = cfg.train
    loss_model = wrap(model, strategy=t.parallel, world=world,
                      activation_checkpointing=t.activation_checkpointing, compile=t.compile)
    opt = build_optimizer(loss_model, lr=t.lr, weight_decay=t.weight_decay, betas=t.betas)
    loader, val_loader = build_loaders(cfg, world, sets, weights, val)
    start_step = resume_latest(out, loss_model, opt, loader, world=world)
    metrics = _metrics_log(out, start_step) if world.is_main else None
    peak = t.peak_tflops * 1e12 if t.peak_tflops else matmul_peak(world.device, dtype)
    r = Run(cfg, world, tok, model, loss_model, opt, loader, val_loader, metrics, dtype,
            train_flops_per_token(model.config, cfg.data.seq_len), peak,
            tensorboard_writer(out, enabled=t.tensorboard and world.is_main))
    # -- fit
    with stop_on_signals() as stop:
        summary = fit(r, start_step, stop)
    # -- save: fit's last checkpoint already holds the gathered weights; export copies it
    if world.is_main:
        export(checkpoints(out)[-1], out / "model", cfg, tok_dir, num_params=model.num_params())
        summary["curve_png"] = str(plot_losses(metrics.records, out / "loss.png",
                                               title=f"pretrain {cfg.model.preset}"))
        summary.update(model_dir=str(out / "model"), num_params=model.num_params(),
                       world_size=world.size)
    shutdown(world)
    return summary


def _metrics_log(out: Path, start_step: int) -> MetricsLog:
    """The run's metrics.jsonl, without the records past the step it resumes from."""
    metrics = MetricsLog(out / "metrics.jsonl", resume=start_step > 0)
    metrics.truncate_after(start_step)
    return metrics


@torch.no_grad()
def validation_loss(model_dir: Path, tokens: Path, *, seq_len: int, document_mask: bool = False,
                    batches: int = 4, batch_size: int = 4) -> float:
    """Validation loss of an HF folder on a token directory's val split at `seq_len`
    (positions run 0..seq_len-1 across documents unless `document_mask`)."""
    model = load_model(model_dir)
    val = TokenDataset(tokens, "val")
    rows = max(1, min(batch_size, (val.num_tokens - 1) // seq_len))
    loader = PackedLoader(val, seq_len=seq_len, batch_size=rows, seed=0,
                          reset_positions=document_mask, shuffle=False)
    cfg = PretrainConfig(data=DataSection(path=tokens, seq_len=seq_len,
                                          document_mask=document_mask),
                         train=TrainSection(eval_batches=batches))
    return evaluate(wrap(model, strategy="none", world=World()), loader, cfg,
                    torch.device("cpu"), torch.float32)


def train_step(r: Run, step: int) -> tuple[float, float]:
    """One optimizer step over grad_accum micro-batches; returns (mean loss, grad norm)."""
    t = r.cfg.train
    loss = 0.0
    for _ in range(t.grad_accum):
        batch = rank_rows(r.loader.next_batch(), r.world)
        micro = loss_on(r.loss_model, batch, document_mask=r.cfg.data.document_mask,
                        device=r.world.device, dtype=r.dtype) / t.grad_accum
        micro.backward()
        loss += micro.item()
    loss = mean_across(loss, r.world)
    if not math.isfinite(loss):
        raise FullchainError(
            f"loss is {loss} at step {step + 1}: training stopped; the last good checkpoint "
            f"stays in {Path(r.cfg.out) / 'checkpoints'} (lower train.lr, then rerun to resume)")
    grad_norm = grad_norm_clip(r.loss_model, t.grad_clip)
    r.opt.step()
    r.opt.zero_grad(set_to_none=True)
    return loss, grad_norm


def fit(r: Run, start_step: int, stop: StopFlag) -> dict:
    """The optimisation loop; logs every step, evaluates and checkpoints on schedule."""
    t, out = r.cfg.train, Path(r.cfg.out)
    schedule = dict(max_steps=t.max_steps, lr=t.lr, warmup_steps=t.warmup_steps,
                    min_lr_ratio=t.min_lr_ratio, schedule=t.schedule)
    tokens_per_step = t.batch_size * t.grad_accum * r.cfg.data.seq_len * r.world.size
    start_time = time.perf_counter()
    with progress_bar(enabled=r.world.is_main, total=t.max_steps, start=start_step) as bar:
        for step in range(start_step, t.max_steps):
            tick = time.perf_counter()
            lr = lr_at(step, **schedule)
            for group in r.opt.param_groups:
                group["lr"] = lr
            loss, grad_norm = train_step(r, step)
            seconds = time.perf_counter() - tick
            done = step + 1
            record = {"step": done, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                      "tokens": tokens_per_step, "seconds": seconds,
                      "tokens_per_s": tokens_per_step / seconds,
                      "mfu": tokens_per_step * r.flops_per_token / seconds / r.peak_flops}
            if done % t.eval_every == 0 or done == t.max_steps:
                record["val_loss"] = evaluate(r.loss_model, r.val_loader, r.cfg, r.world.device,
                                              r.dtype)
            if r.metrics:
                r.metrics.log(**record)
                log_tensorboard(r.writer, record)
            halt = stop.agreed(r.world)
            if done % t.save_every == 0 or done == t.max_steps or halt:
                save_checkpoint(out, done, r.loss_model, r.opt, r.loader, r.tok, world=r.world,
                                keep=t.keep_checkpoints)
            bar.update(done, f"loss {loss:.3f} lr {lr:.2e}")
            if halt:
                raise FullchainError(f"stopped by {stop.signal_name} after step {done}; the "
                                     f"checkpoint is in {out / 'checkpoints'}: rerun the same "
                                     "command to resume")
    records = r.metrics.records if r.metrics else []
    return summarize(records, start_step, time.perf_counter() - start_time, tokens_per_step)


def summarize(records: list[dict], start_step: int, wall_seconds: float,
              tokens_per_step: int) -> dict:
    """The whole run's figures from its metrics log, over every invocation (a resumed run
    counts the steps before `start_step` too, at the batch size they had; a finished run rerun
    trains nothing and reports what it had done). Records written before steps logged their
    tokens and seconds count `tokens_per_step` tokens at their logged tokens/s."""
    losses = [r["loss"] for r in records if "loss" in r]
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    mfus = [r["mfu"] for r in records if "mfu" in r][1:]  # step 1 includes warm-up
    steps = records[-1]["step"] if records else 0
    trained = [r for r in records if "loss" in r]
    tokens = sum(r.get("tokens", tokens_per_step) for r in trained)
    train_seconds = sum(r["seconds"] if "seconds" in r else tokens_per_step / r["tokens_per_s"]
                        for r in trained)
    return {
        "steps": steps,
        "resumed_from_step": start_step,
        "first_loss": losses[0] if losses else None,
        "final_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        "val_loss": vals[-1] if vals else None,
        "tokens_trained": tokens,
        "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,
        "tokens_per_s": tokens / train_seconds if train_seconds else None,
        "mfu": sum(mfus) / len(mfus) if mfus else None,
    }


def export(checkpoint: Path, model_dir: Path, cfg: PretrainConfig, tok_dir: Path, *,
           num_params: int) -> None:
    """The final HF folder (a checkpoint's weights, config and tokenizer, without its training
    state) with the run's lineage in meta.json."""
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(checkpoint, model_dir, ignore=shutil.ignore_patterns("trainer_state"))
    inputs = [cfg.data.path, *cfg.data.mixture, tok_dir]
    if cfg.model.init_from:
        inputs.append(cfg.model.init_from)
    lineage = make_lineage(stage="pretrain", inputs=inputs, config=config_to_dict(cfg),
                           seed=cfg.train.seed)
    write_meta(model_dir, format="fullchain.model", version=1, lineage=lineage,
               num_params=num_params)
