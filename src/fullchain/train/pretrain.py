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
from typing import Literal

import torch

from fullchain.checkpoint import load_model, save_model
from fullchain.config import config_to_dict, dump_config, require
from fullchain.errors import FullchainError
from fullchain.formats.lineage import make_lineage, write_meta
from fullchain.formats.tokens import TokenDataset
from fullchain.model import DocumentAttention, Transformer, causal, preset
from fullchain.tokenizer import Tokenizer
from fullchain.train import state as train_state
from fullchain.train.data import Batch, PackedLoader
from fullchain.train.loss import linear_cross_entropy
from fullchain.train.metrics import MetricsLog, plot_losses
from fullchain.train.optim import build_optimizer, lr_at

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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg: PretrainConfig, vocab_size: int, tok: Tokenizer) -> Transformer:
    if cfg.model.init_from is not None:
        model = load_model(cfg.model.init_from)
        changes = {k: v for k, v in (("max_position_embeddings", cfg.model.max_position_embeddings),
                                     ("rope_theta", cfg.model.rope_theta)) if v is not None}
        if changes:  # context extension: same weights, new RoPE settings (rebuild the buffer)
            new = Transformer(model.config.replace(**changes))
            new.load_state_dict(model.state_dict())
            model = new
        if model.config.vocab_size < vocab_size:
            raise FullchainError(f"{cfg.model.init_from}: model vocab {model.config.vocab_size} < "
                                 f"token shards' vocab {vocab_size}")
        return model
    overrides = {k: v for k, v in (("max_position_embeddings", cfg.model.max_position_embeddings),
                                   ("rope_theta", cfg.model.rope_theta)) if v is not None}
    mcfg = preset(cfg.model.preset, vocab_size=vocab_size, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **overrides)
    model = Transformer(mcfg)
    model.init_weights(seed=cfg.train.seed)
    return model


def loss_on(model: Transformer, batch: Batch, *, document_mask: bool,
            device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    ids, targets = batch.input_ids.to(device), batch.targets.to(device)
    positions = batch.positions.to(device)
    attention = DocumentAttention(batch.doc_ids.to(device)) if document_mask else causal
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        hidden = model(ids, positions=positions, attention=attention, return_hidden=True)
        return linear_cross_entropy(hidden, model.lm_head.weight, targets)


@torch.no_grad()
def evaluate(model: Transformer, loader: PackedLoader, cfg: PretrainConfig,
             device: torch.device, dtype: torch.dtype) -> float:
    """Mean loss over the first `eval_batches` windows of the validation shard (fixed order)."""
    model.eval()
    loader.load_state_dict({"epoch": 0, "cursor": 0})
    batches = min(cfg.train.eval_batches, loader.num_windows // loader.batch_size)
    losses = [loss_on(model, loader.next_batch(), document_mask=cfg.data.document_mask,
                      device=device, dtype=dtype).item() for _ in range(max(1, batches))]
    model.train()
    return sum(losses) / len(losses)


def run(cfg: PretrainConfig) -> dict:
    """Train, checkpoint and export; returns a summary (losses, timings, sizes)."""
    # -- setup
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    tok_dir = cfg.data.tokenizer or Path(cfg.data.path) / "tokenizer"
    tok = Tokenizer.from_dir(tok_dir)
    train_ds = TokenDataset(cfg.data.path, "train")
    train_ds.check_compatible(tok.content_hash(), tok.vocab_size)
    val_ds = TokenDataset(cfg.data.path, "val")
    device = resolve_device(cfg.train.device)
    dtype = torch.bfloat16 if cfg.train.dtype == "bfloat16" else torch.float32
    torch.manual_seed(cfg.train.seed)
    # -- build
    model = build_model(cfg, train_ds.vocab_size, tok).to(device).train()
    opt = build_optimizer(model, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                          betas=cfg.train.betas)
    loader = PackedLoader(train_ds, seq_len=cfg.data.seq_len, batch_size=cfg.train.batch_size,
                          seed=cfg.train.seed, reset_positions=cfg.data.reset_positions)
    val_loader = PackedLoader(val_ds, seq_len=cfg.data.seq_len,
                              batch_size=min(cfg.train.batch_size, max(1, (
                                  val_ds.num_tokens - 1) // cfg.data.seq_len)),
                              seed=0, reset_positions=cfg.data.reset_positions, shuffle=False)
    start_step = train_state.resume_latest(out, model, opt, loader)
    metrics = MetricsLog(out / "metrics.jsonl", resume=start_step > 0)
    metrics.truncate_after(start_step)
    # -- fit
    summary = fit(cfg, model, opt, loader, val_loader, metrics, start_step, device, dtype, tok)
    # -- save
    model_dir = out / "model"
    export(model, tok, model_dir, cfg, tok_dir)
    summary["curve_png"] = str(plot_losses(metrics.records, out / "loss.png",
                                           title=f"pretrain {cfg.model.preset}"))
    summary["model_dir"] = str(model_dir)
    summary["num_params"] = model.num_params()
    return summary


def fit(cfg: PretrainConfig, model: Transformer, opt: torch.optim.Optimizer,
        loader: PackedLoader, val_loader: PackedLoader, metrics: MetricsLog, start_step: int,
        device: torch.device, dtype: torch.dtype, tok: Tokenizer) -> dict:
    """The optimisation loop; logs every step, evaluates and checkpoints on schedule."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    t = cfg.train
    schedule = dict(max_steps=t.max_steps, lr=t.lr, warmup_steps=t.warmup_steps,
                    min_lr_ratio=t.min_lr_ratio, schedule=t.schedule)
    tokens_per_step = t.batch_size * t.grad_accum * cfg.data.seq_len
    start_time, train_seconds = time.perf_counter(), 0.0
    columns = [TextColumn("pretrain"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("steps", total=t.max_steps, completed=start_step, info="")
        for step in range(start_step, t.max_steps):
            tick = time.perf_counter()
            lr = lr_at(step, **schedule)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = 0.0
            for _ in range(t.grad_accum):
                micro = loss_on(model, loader.next_batch(), document_mask=cfg.data.document_mask,
                                device=device, dtype=dtype) / t.grad_accum
                micro.backward()
                loss += micro.item()
            if not math.isfinite(loss):
                raise FullchainError(
                    f"loss is {loss} at step {step + 1}: training stopped; the last good "
                    f"checkpoint stays in {Path(cfg.out) / 'checkpoints'} (lower train.lr)")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip))
            opt.step()
            opt.zero_grad(set_to_none=True)
            train_seconds += time.perf_counter() - tick
            done = step + 1
            record = {"step": done, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                      "tokens_per_s": tokens_per_step / (time.perf_counter() - tick)}
            if done % t.eval_every == 0 or done == t.max_steps:
                record["val_loss"] = evaluate(model, val_loader, cfg, device, dtype)
            metrics.log(**record)
            if done % t.save_every == 0 or done == t.max_steps:
                train_state.save_checkpoint(Path(cfg.out), done, model, opt, loader, tok,
                                            keep=t.keep_checkpoints)
            bar.update(task, completed=done, info=f"loss {loss:.3f} lr {lr:.2e}")
    return summarize(metrics.records, start_step, train_seconds, time.perf_counter() - start_time,
                     tokens_per_step)


def summarize(records: list[dict], start_step: int, train_seconds: float, wall_seconds: float,
              tokens_per_step: int) -> dict:
    losses = [r["loss"] for r in records if "loss" in r]
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    steps_run = max(0, (records[-1]["step"] if records else 0) - start_step)
    return {
        "steps": records[-1]["step"] if records else 0,
        "resumed_from_step": start_step,
        "first_loss": losses[0] if losses else None,
        "final_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        "val_loss": vals[-1] if vals else None,
        "tokens_trained": steps_run * tokens_per_step,
        "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,
        "tokens_per_s": steps_run * tokens_per_step / train_seconds if train_seconds else None,
    }


def export(model: Transformer, tok: Tokenizer, model_dir: Path, cfg: PretrainConfig,
           tok_dir: Path) -> None:
    """The final HF folder: weights, config, tokenizer and the lineage in meta.json."""
    if model_dir.exists():
        shutil.rmtree(model_dir)
    save_model(model, model_dir)
    tok.save(model_dir)
    lineage = make_lineage(stage="pretrain", inputs=[cfg.data.path, tok_dir],
                           config=config_to_dict(cfg), seed=cfg.train.seed)
    write_meta(model_dir, format="fullchain.model", version=1, lineage=lineage,
               num_params=model.num_params())
