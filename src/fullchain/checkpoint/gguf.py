"""Write a model as one GGUF file for llama.cpp (CONVENTIONS §6, §1.9).

    export_gguf("~/models/SmolLM2-135M", "smollm2.gguf", file_type="q8_0")

Llama and Mistral models become llama.cpp's `llama` architecture, Qwen2 its `qwen2`. The `llama`
architecture rotates adjacent pairs of a head's dimensions, where HF rotates dimension i with
i + d/2, so the rows of q and k are permuted per head on the way out (`qwen2` rotates as HF does).
Norms stay fp32, as llama.cpp's converter keeps them; `file_type` sets the other weights:
"f32", "f16", "bf16" or "q8_0" (blocks of 32 int8 values with one fp16 scale).

The vocabulary is the folder's `tokenizer.json` (byte-level BPE: tokens, merges, special tokens,
the chat template) or its `tokenizer.model` (SentencePiece: pieces, scores and types, as
llama.cpp's `llama` tokenizer reads them, for Llama 2 or InternLM2). Without one
(`write_gguf(model, out)`, a model with random weights in a benchmark) the file gets a
vocabulary of ids only: the 256 byte tokens, then placeholders, so llama.cpp loads it and runs
on token ids.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fullchain.checkpoint.hf_config import DTYPES
from fullchain.checkpoint.io import load_model, read_json
from fullchain.config import CheckpointError
from fullchain.formats.lineage import make_lineage
from fullchain.model.transformer import Transformer
from fullchain.tokenizer import Tokenizer

FILE_TYPES = ("f32", "f16", "bf16", "q8_0")

# llama.cpp's names of the pre-tokenizer regexes it implements (llama-vocab.cpp), by the regex
# of a `Split` pre-tokenizer in tokenizer.json; a byte-level BPE with another split is refused,
# since llama.cpp would cut its text into other words than the tokenizer it was trained with.
_PRE_TOKENIZERS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}
_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}
_NORMAL, _CONTROL, _USER_DEFINED = 1, 3, 4  # gguf.TokenType


def _gguf():
    try:
        import gguf
    except ImportError:
        raise CheckpointError("writing GGUF needs the 'gguf' package (llama.cpp's gguf-py): "
                              "pip install gguf") from None
    logging.getLogger("gguf").setLevel(logging.WARNING)  # it logs every file it writes at INFO
    return gguf


def export_gguf(folder: str | os.PathLike, out: str | os.PathLike, *,
                file_type: str = "f32") -> Path:
    """An HF model folder (weights, config, tokenizer.json or tokenizer.model) as one GGUF file
    at `out`. The weights are loaded in the dtype they are stored in and converted one tensor at
    a time."""
    _check_file_type(file_type)  # before loading a large model
    folder = Path(folder).expanduser()
    config = read_json(folder / "config.json")
    stored = config.get("torch_dtype") or config.get("dtype")
    model = load_model(folder, dtype=stored if stored in DTYPES else "float32")
    vocab = _vocab(folder, Tokenizer.from_dir(folder), model.config.vocab_size)
    lineage = make_lineage(stage="export-gguf", inputs=[folder],
                           config={"file_type": file_type}, seed=None)
    return write_gguf(model, out, file_type=file_type, vocab=vocab, name=folder.name,
                      lineage=lineage)


def write_gguf(model: Transformer, out: str | os.PathLike, *, file_type: str = "f32",
               vocab: dict[str, Any] | None = None, name: str = "fullchain",
               lineage: dict[str, Any] | None = None) -> Path:
    """`model` as a GGUF file; `vocab` (from `export_gguf`) None writes a vocabulary of ids only.
    `lineage` (DESIGN.md) goes into the key `fullchain.lineage` as JSON. Written aside and
    renamed, so `out` is never half a file."""
    gguf = _gguf()
    cfg = model.config
    arch = _arch(cfg)
    _check_file_type(file_type)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch=arch)
    try:
        _write_hparams(writer, gguf, cfg, file_type, name)
        if lineage is not None:
            writer.add_string("fullchain.lineage", json.dumps(lineage, sort_keys=True))
        _write_vocab(writer, vocab or _ids_only_vocab(cfg.vocab_size), cfg)
        for tensor_name, tensor in _tensors(model, arch):
            _add_tensor(writer, gguf, tensor_name, tensor, file_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)  # a full disk or a bad tensor leaves nothing behind
        raise
    writer.close()
    os.replace(tmp, out)
    return out


def _check_file_type(file_type: str) -> None:
    if file_type not in FILE_TYPES:
        raise CheckpointError(f"GGUF file type {file_type!r} is not supported; use one of "
                              f"{', '.join(FILE_TYPES)}")


# --------------------------------------------------------------------------- hyper-parameters

def _arch(cfg) -> str:
    model_type = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                  "Qwen2ForCausalLM": "qwen2"}.get(cfg.architecture)
    if model_type not in _ARCH:
        raise CheckpointError(f"GGUF export of {cfg.architecture} is not supported "
                              f"(Llama, Mistral, Qwen2)")
    unsupported = [(cfg.mlp_bias, "mlp_bias: llama.cpp's llama graph has no MLP biases"),
                   (cfg.sliding_window is not None
                    and cfg.sliding_window < cfg.max_position_embeddings,
                    "sliding_window: llama.cpp's llama graph attends over the whole context"),
                   (cfg.rope_type not in ("default", "linear"),
                    f"rope_scaling type {cfg.rope_type!r}: only none and linear are written")]
    for bad, why in unsupported:
        if bad:
            raise CheckpointError(f"GGUF export: model config {why}")
    return _ARCH[model_type]


def _write_hparams(writer, gguf, cfg, file_type: str, name: str) -> None:
    writer.add_name(name)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[file_type])
    if file_type == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(float(cfg.rope_theta))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    if cfg.rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(cfg.rope_scaling["factor"]))


# --------------------------------------------------------------------------- vocabulary

def _vocab(folder: Path, tok: Tokenizer, vocab_size: int) -> dict[str, Any]:
    """The GGUF vocabulary of a folder's tokenizer, padded to the embedding's rows: tokens and
    their types, BOS/EOS/pad and the chat template as `tok` reads them, plus what llama.cpp's
    tokenizer of that kind needs (merges and the pre-tokenizer for byte-level BPE; scores and
    the space prefix for SentencePiece)."""
    tokens = [tok.id_to_token(i) if i < tok.vocab_size else None for i in range(vocab_size)]
    types = [_NORMAL] * vocab_size
    if tok.backend_kind == "tokenizer.model":
        kind = _sentencepiece_fields(folder / "tokenizer.model", types, vocab_size)
    else:
        kind = _bpe_fields(read_json(folder / "tokenizer.json"), str(folder / "tokenizer.json"))
    first_added = len(kind.get("scores", ()))  # a SentencePiece model types its own pieces
    if "scores" in kind:
        kind["scores"] += [0.0] * (vocab_size - first_added)
    for added in tok.added_tokens():
        if first_added <= added.id < vocab_size:
            types[added.id] = _CONTROL if added.special else _USER_DEFINED
    for i, token in enumerate(tokens):
        if token is None:  # embedding rows past the tokenizer: llama.cpp's converter pads alike
            tokens[i], types[i] = f"[PAD{i}]", _USER_DEFINED
    bos = tok.bos_token_id
    return {**kind, "tokens": tokens, "types": types, "bos": bos, "eos": tok.eos_token_id,
            "pad": tok.pad_token_id, "chat_template": tok.chat_template,
            "add_bos": bos is not None and tok.encode("a", add_special_tokens=True)[:1] == [bos]}


def _bpe_fields(tokenizer_json: dict, source: str) -> dict[str, Any]:
    """Merges and pre-tokenizer of a byte-level BPE tokenizer.json."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        raise CheckpointError(f"{source}: model type {model.get('type')!r}; GGUF export writes "
                              "byte-level BPE and SentencePiece vocabularies only")
    return {"model": "gpt2", "pre": _pre_tokenizer(tokenizer_json.get("pre_tokenizer"), source),
            "merges": [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]}


def _sentencepiece_fields(path: Path, types: list[int], vocab_size: int) -> dict[str, Any]:
    """Scores of a SentencePiece model's pieces and the space prefix; its piece types (the same
    numbers as GGUF's: normal, unknown, control, user-defined, unused, byte) go into `types`."""
    from sentencepiece import sentencepiece_model_pb2  # the Tokenizer has loaded it already
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    norm = proto.normalizer_spec
    if (norm.name != "identity" and norm.precompiled_charsmap) or norm.remove_extra_whitespaces:
        raise CheckpointError(f"{path}: its normalizer ({norm.name!r}, remove_extra_whitespaces="
                              f"{norm.remove_extra_whitespaces}) rewrites text before it is cut, "
                              "which llama.cpp does not do; only identity normalization (Llama 2, "
                              "InternLM2) is written")
    pieces = proto.pieces[:vocab_size]
    for i, piece in enumerate(pieces):
        types[i] = piece.type
    return {"model": "llama", "pre": "default", "scores": [p.score for p in pieces],
            "add_space_prefix": norm.add_dummy_prefix}


def _pre_tokenizer(pre: dict | None, source: str) -> str:
    steps = (pre or {}).get("pretokenizers", [pre] if pre else [])
    splits = [s["pattern"].get("Regex") for s in steps if s.get("type") == "Split"]
    if not splits:
        if any(s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps):
            return "gpt-2"
    elif len(splits) == 1 and splits[0] in _PRE_TOKENIZERS:
        return _PRE_TOKENIZERS[splits[0]]
    raise CheckpointError(f"{source}: pre-tokenizer {json.dumps(pre)[:200]} is not one that "
                          "llama.cpp implements (GPT-2, Llama 3 or Qwen2 splitting)")


def _ids_only_vocab(vocab_size: int) -> dict[str, Any]:
    """The 256 byte tokens of a byte-level BPE (llama.cpp needs one for a newline), one merge
    (it needs at least one) and placeholders for the other ids."""
    from tokenizers import pre_tokenizers
    tokens = [*sorted(pre_tokenizers.ByteLevel.alphabet()), "ĠĠ"][:vocab_size]
    tokens += [f"<id_{i}>" for i in range(len(tokens), vocab_size)]
    return {"model": "gpt2", "pre": "default", "tokens": tokens,
            "types": [_NORMAL] * vocab_size, "merges": ["Ġ Ġ"], "bos": None, "eos": None,
            "pad": None, "add_bos": False, "chat_template": None}


def _write_vocab(writer, vocab: dict[str, Any], cfg) -> None:
    writer.add_tokenizer_model(vocab["model"])
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    if "scores" in vocab:
        writer.add_token_scores(vocab["scores"])
    if "merges" in vocab:
        writer.add_token_merges(vocab["merges"])
    if "add_space_prefix" in vocab:
        writer.add_add_space_prefix(vocab["add_space_prefix"])
    bos = vocab["bos"] if vocab["bos"] is not None else cfg.bos_token_id
    eos = vocab["eos"] if vocab["eos"] is not None else (cfg.eos_token_ids or [None])[0]
    for add, token_id in ((writer.add_bos_token_id, bos), (writer.add_eos_token_id, eos),
                          (writer.add_pad_token_id, vocab["pad"])):
        if token_id is not None and token_id < cfg.vocab_size:
            add(token_id)
    writer.add_add_bos_token(vocab["add_bos"])
    if vocab["chat_template"]:
        writer.add_chat_template(vocab["chat_template"])


# --------------------------------------------------------------------------- tensors

_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight", "self_attn.o_proj.bias": "attn_output.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _tensors(model: Transformer, arch: str):
    """(GGUF name, fp32 tensor) for every weight, q and k permuted for the `llama` rotation."""
    cfg = model.config
    state = model.state_dict()
    yield "token_embd.weight", state["model.embed_tokens.weight"]
    for i in range(cfg.num_hidden_layers):
        prefix = f"model.layers.{i}."
        for hf_name, gguf_name in _LAYER_NAMES.items():
            if prefix + hf_name not in state:
                continue
            tensor = state[prefix + hf_name]
            if arch == "llama" and hf_name.startswith(("self_attn.q_proj", "self_attn.k_proj")):
                heads = (cfg.num_attention_heads if "q_proj" in hf_name
                         else cfg.num_key_value_heads)
                tensor = interleave_rotary(tensor, heads)
            yield f"blk.{i}.{gguf_name}", tensor
    yield "output_norm.weight", state["model.norm.weight"]
    if not cfg.tie_word_embeddings:
        yield "output.weight", state["lm_head.weight"]


def interleave_rotary(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of q or k (or their bias) reordered per head from HF's halves (i, i + d/2) to
    adjacent pairs (2i, 2i + 1), the layout of llama.cpp's `llama` rotation (§1.9)."""
    rows = weight.shape[0]
    return (weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
            .transpose(1, 2).reshape(weight.shape))


def _add_tensor(writer, gguf, name: str, tensor: torch.Tensor, file_type: str) -> None:
    data = tensor.detach().to(torch.float32).contiguous().numpy()
    kind = "f32" if data.ndim == 1 else file_type  # norms and biases stay fp32
    if kind == "f32":
        writer.add_tensor(name, data)
    elif kind == "f16":
        writer.add_tensor(name, data.astype(np.float16))
    else:
        quant = {"bf16": gguf.GGMLQuantizationType.BF16,
                 "q8_0": gguf.GGMLQuantizationType.Q8_0}[kind]
        writer.add_tensor(name, gguf.quants.quantize(data, quant), raw_dtype=quant)
