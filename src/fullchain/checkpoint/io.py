"""Read and write Hugging Face model folders (CONVENTIONS §1).

Loading builds the model on the meta device and assigns tensors read one at a time from the
memory-mapped safetensors, so peak memory is about one copy of the weights.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fullchain.checkpoint import internlm2
from fullchain.checkpoint.hf_config import config_from_hf, config_to_hf, parse_dtype
from fullchain.config import CheckpointError
from fullchain.model.config import ModelConfig
from fullchain.model.rope import inv_freq
from fullchain.model.transformer import Transformer

log = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 5 * 1024**3


def _folder(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"model folder '{path}' does not exist (expected an HF model folder "
                              "with config.json and model.safetensors)")
    return path


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"'{path}' is missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"'{path}' is not valid JSON (line {e.lineno}): {e.msg}") from None


def load_config(path: str | os.PathLike) -> ModelConfig:
    """The ModelConfig of an HF model folder."""
    folder = _folder(path)
    return config_from_hf(read_json(folder / "config.json"), source=str(folder / "config.json"))


def _weight_files(folder: Path) -> list[Path]:
    if (folder / INDEX_FILE).exists():
        index = read_json(folder / INDEX_FILE)
        if "weight_map" not in index:
            raise CheckpointError(f"'{folder / INDEX_FILE}' has no 'weight_map'")
        return [folder / f for f in sorted(set(index["weight_map"].values()))]
    if (folder / SINGLE_FILE).exists():
        return [folder / SINGLE_FILE]
    raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in '{folder}' "
                          "(fullchain reads safetensors weights only)")


def iter_tensors(folder: Path, *, dtype: torch.dtype | None = None,
                 device: str | torch.device | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of the folder, read lazily from memory-mapped files.

    A tensor already in `dtype` on `device` (None: as stored, on the CPU) is a view of the
    mapped file. Any other is converted from a mapping of its own, closed at once, so the
    source pages are freed tensor by tensor: converting peaks at the converted weights plus
    one source tensor, not plus a whole file.
    """
    for file in _weight_files(folder):
        if not file.exists():
            raise CheckpointError(f"weight file '{file}' named in {INDEX_FILE} is missing")
        with _open(file) as f:
            for name in f.keys():
                tensor = _get(f, file, name)  # a view: no page of the file is read yet
                if _converts(tensor, dtype, device):
                    del tensor
                    with _open(file) as own:
                        tensor = _get(own, file, name).to(device=device, dtype=dtype)
                yield name, tensor


def _converts(tensor: torch.Tensor, dtype: torch.dtype | None,
              device: str | torch.device | None) -> bool:
    return ((dtype is not None and dtype != tensor.dtype)
            or (device is not None and torch.device(device) != tensor.device))


def _open(file: Path):
    try:
        return safe_open(str(file), framework="pt")
    except Exception as e:  # safetensors raises its own error types for bad headers/sizes
        raise _corrupt(file, e) from None


def _get(f, file: Path, name: str) -> torch.Tensor:
    try:
        return f.get_tensor(name)
    except Exception as e:
        raise _corrupt(file, e) from None


def _corrupt(file: Path, e: Exception) -> CheckpointError:
    return CheckpointError(f"'{file}' is truncated or corrupt ({e}); re-save or re-download it")


def load_model(path: str | os.PathLike, *, dtype: str | torch.dtype | None = "float32",
               device: str | torch.device = "cpu") -> Transformer:
    """Load an HF folder (Llama, Qwen2, Mistral, InternLM2) as a Transformer in `dtype`."""
    folder = _folder(path)
    raw = read_json(folder / "config.json")
    cfg = config_from_hf(raw, source=str(folder / "config.json"))
    dtype = parse_dtype(dtype) or torch.float32
    is_internlm2 = raw.get("model_type") == "internlm2"
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = dict(model.state_dict())
    if cfg.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    loaded: dict[str, torch.Tensor] = {}
    for name, tensor in iter_tensors(folder, dtype=dtype, device=device):
        pairs = internlm2.convert_tensor(name, tensor, cfg) if is_internlm2 else [(name, tensor)]
        for key, value in pairs:
            if key not in expected:
                if key.endswith("rotary_emb.inv_freq") or key == "lm_head.weight":
                    continue  # old checkpoints store inv_freq; tied models may carry lm_head
                raise CheckpointError(
                    f"'{folder}': unexpected tensor '{key}' for {cfg.architecture}")
            if tuple(value.shape) != tuple(expected[key].shape):
                raise CheckpointError(f"'{folder}': tensor '{key}' has shape {tuple(value.shape)}, "
                                      f"config.json implies {tuple(expected[key].shape)}")
            loaded[key] = value.to(device=device, dtype=dtype)
    missing = sorted(set(expected) - set(loaded))
    if missing:
        more = " and more" if len(missing) > 3 else ""
        raise CheckpointError(f"'{folder}' lacks tensor(s) {missing[:3]}{more}; "
                              "the weights are incomplete")
    model.load_state_dict(loaded, strict=False, assign=True)
    _finish(model, device)
    return model


def _finish(model: Transformer, device: str | torch.device) -> None:
    """Re-tie embeddings and rebuild the non-persistent RoPE buffer after a meta-device load."""
    if model.config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    rotary = model.model.rotary_emb
    freq, rotary.scale = inv_freq(model.config)
    rotary.inv_freq = freq.to(device)
    model.eval()


def save_model(model: Transformer, path: str | os.PathLike, *,
               dtype: str | torch.dtype | None = None,
               max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Write config.json, generation_config.json and safetensors weights (sharded when large).

    Tied models omit `lm_head.weight`. Each file is written aside and renamed into place.
    """
    return save_state_dict(model.state_dict(), model.config, path, dtype=dtype,
                           max_shard_bytes=max_shard_bytes)


def save_state_dict(state_dict: dict[str, torch.Tensor], cfg: ModelConfig,
                    path: str | os.PathLike, *, dtype: str | torch.dtype | None = None,
                    max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """`save_model` for a plain HF-named state dict (e.g. one gathered from FSDP shards)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = parse_dtype(dtype) or next(iter(state_dict.values())).dtype
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state_dict.items()}
    if cfg.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    _write_weights(folder, tensors, max_shard_bytes)
    _write_json(folder / "config.json", config_to_hf(cfg, dtype=dtype))
    _write_json(folder / "generation_config.json", generation_config(cfg))
    return folder


def generation_config(cfg: ModelConfig) -> dict[str, Any]:
    out = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}
    if cfg.pad_token_id is not None:
        out["pad_token_id"] = cfg.pad_token_id
    return out


def _write_weights(folder: Path, tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> None:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    for stale in [*folder.glob("model-*-of-*.safetensors"), folder / SINGLE_FILE,
                  folder / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        _save_safetensors(shards[0], folder / SINGLE_FILE)
        return
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        _save_safetensors(shard, folder / name)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(folder / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
