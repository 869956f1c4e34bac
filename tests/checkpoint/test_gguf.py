"""GGUF export: the file's metadata and tensors read back with llama.cpp's gguf-py, and the
file run by llama.cpp itself (llama-cpp-python) against our model's logits and tokenizer."""

import io
import json
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from fullchain.checkpoint import save_model
from fullchain.checkpoint.gguf import export_gguf, interleave_rotary, write_gguf
from fullchain.config import CheckpointError
from fullchain.formats.lineage import hash_path
from fullchain.model import ModelConfig, Transformer
from fullchain.tokenizer import get_builtin_template, train_bpe

gguf = pytest.importorskip("gguf")

CFG = dict(vocab_size=320, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, intermediate_size=96, max_position_embeddings=256,
           rope_theta=50000.0, rms_norm_eps=1e-5)
TEXTS = [f"The quick brown fox number {i} jumps over the lazy dog, and runs home to {i * 7}.\n"
         for i in range(80)]


def tiny(**kw) -> Transformer:
    model = Transformer(ModelConfig(**{**CFG, **kw}))
    model.init_weights(seed=11)
    with torch.no_grad():
        model.lm_head.weight.mul_(10)  # sharp logits, so greedy tokens differ from step to step
    return model.eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A model folder with a trained byte-level BPE tokenizer and a chat template."""
    path = tmp_path_factory.mktemp("model")
    tok = train_bpe(TEXTS, vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                           "<|im_end|>"],
                    eos_token="<|endoftext|>")
    tok.chat_template = get_builtin_template("chatml")
    tok.save(path)
    save_model(tiny(eos_token_id=tok.token_to_id("<|endoftext|>")), path)
    return path, tok


def read(path):
    reader = gguf.GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    return fields, tensors


def test_metadata_vocab_and_tensors_read_back(folder, tmp_path):
    path, tok = folder
    out = export_gguf(path, tmp_path / "m.gguf")
    fields, tensors = read(out)
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == 2 and fields["llama.embedding_length"] == 64
    assert fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.rope.freq_base"] == pytest.approx(50000.0)
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == 320  # the embedding's rows: the tokenizer's 300, then padding
    assert all(tokens[i] == tok.id_to_token(i) for i in range(tok.vocab_size))
    assert fields["tokenizer.ggml.pre"] == "qwen2"  # fullchain's split: Llama 3's, 1 digit a word
    assert fields["tokenizer.ggml.eos_token_id"] == tok.token_to_id("<|endoftext|>")
    assert fields["tokenizer.ggml.token_type"][tok.token_to_id("<|im_end|>")] == 3  # control
    assert "<|im_start|>" in fields["tokenizer.chat_template"]
    lineage = json.loads(fields["fullchain.lineage"])
    assert lineage["stage"] == "export-gguf" and lineage["config"] == {"file_type": "f32"}
    assert lineage["inputs"][0]["sha256"] == hash_path(path)
    assert "output.weight" in tensors  # untied head
    model = tiny()
    state = model.state_dict()
    q = np.asarray(tensors["blk.1.attn_q.weight"].data)
    expected = interleave_rotary(state["model.layers.1.self_attn.q_proj.weight"], 4)
    assert np.array_equal(q, expected.numpy())
    k = np.asarray(tensors["blk.0.attn_k.weight"].data)
    assert np.array_equal(k, interleave_rotary(state["model.layers.0.self_attn.k_proj.weight"],
                                               2).numpy())
    assert np.array_equal(np.asarray(tensors["blk.0.ffn_down.weight"].data),
                          state["model.layers.0.mlp.down_proj.weight"].numpy())


def test_a_bf16_folder_is_read_as_stored(folder, tmp_path):
    path, tok = folder
    model = tiny(eos_token_id=tok.token_to_id("<|endoftext|>")).to(torch.bfloat16)
    save_model(model, tmp_path / "bf16")
    tok.save(tmp_path / "bf16")
    out = export_gguf(tmp_path / "bf16", tmp_path / "m.gguf", file_type="bf16")
    _, tensors = read(out)
    tensor = tensors["blk.0.ffn_gate.weight"]
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(96, 64)
    weight = model.state_dict()["model.layers.0.mlp.gate_proj.weight"].float().numpy()
    assert np.array_equal(values, weight)  # bf16 to bf16: no rounding on the way


def test_interleave_pairs_each_heads_halves():
    rows = torch.arange(16.0).reshape(16, 1)  # 2 heads of 8 dims
    out = interleave_rotary(rows, 2).flatten().tolist()
    assert out == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]


@pytest.mark.parametrize("file_type,tolerance", [("f16", 1e-3), ("bf16", 8e-3),
                                                 ("q8_0", 1e-2)])
def test_reduced_types_stay_near_the_weights(tmp_path, file_type, tolerance):
    model = tiny(tie_word_embeddings=True)
    out = write_gguf(model, tmp_path / "m.gguf", file_type=file_type)
    fields, tensors = read(out)
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    assert tensors["output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    tensor = tensors["blk.0.ffn_up.weight"]
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(96, 64)
    weight = model.state_dict()["model.layers.0.mlp.up_proj.weight"].numpy()
    assert np.abs(values - weight).max() <= tolerance * np.abs(weight).max()
    assert fields["tokenizer.ggml.tokens"][-1] == "<id_319>"  # ids only without a tokenizer


@pytest.mark.parametrize("kw,message", [
    (dict(mlp_bias=True), "mlp_bias"),
    (dict(rope_scaling={"type": "dynamic", "factor": 2.0}), "dynamic"),
    (dict(sliding_window=64), "sliding_window"),
])
def test_what_llama_cpp_cannot_run_is_refused_by_name(tmp_path, kw, message):
    with pytest.raises(CheckpointError, match=message):
        write_gguf(tiny(**kw), tmp_path / "m.gguf")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_gguf(tiny(), tmp_path / "m.gguf")
    assert not list(tmp_path.iterdir())


def test_a_bad_file_type_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="q4_0"):
        write_gguf(tiny(), tmp_path / "m.gguf", file_type="q4_0")


# --------------------------------------------------------------------------- llama.cpp itself

@contextmanager
def llama(path):
    """llama.cpp on the file (through llama-cpp-python), freed afterwards."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    try:
        yield llm
    finally:
        llm.close()


@pytest.mark.parametrize("kw", [dict(), dict(tie_word_embeddings=True),
                                dict(qkv_bias=True, architecture="Qwen2ForCausalLM"),
                                dict(rope_scaling={"type": "linear", "factor": 2.0})])
def test_llama_cpp_gives_our_logits(tmp_path, kw):
    model = tiny(**kw)
    out = write_gguf(model, tmp_path / "m.gguf")
    ids = torch.randint(0, 320, (40,)).tolist()
    with llama(out) as llm:
        llm.eval(ids)
        theirs = np.array(llm.scores[: len(ids)], dtype=np.float32)
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0].numpy()
    assert np.abs(theirs - ours).max() < 2e-3 * np.abs(ours).max()
    assert (theirs.argmax(-1) == ours.argmax(-1)).all()


def test_llama_cpp_tokenizes_and_detokenizes_as_we_do(folder, tmp_path):
    path, tok = folder
    out = export_gguf(path, tmp_path / "m.gguf", file_type="q8_0")
    with llama(out) as llm:
        for text in ["The quick brown fox number 123 jumps, and runs home to 4567.\n",
                     "  lazy  dogs'll run\n\nhome!", "<|im_start|>user\nhi<|im_end|>"]:
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok.encode(text)
            assert llm.detokenize(tok.encode(text), special=True).decode() == text


def test_the_gguf_command_writes_the_file(folder, tmp_path):
    path, _ = folder
    run = subprocess.run([sys.executable, "-m", "fullchain", "gguf", str(path), "--out",
                          str(tmp_path / "m.gguf"), "--type", "q8_0"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "m.gguf" in run.stdout and "q8_0" in run.stdout
    fields, tensors = read(tmp_path / "m.gguf")
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    bad = subprocess.run([sys.executable, "-m", "fullchain", "gguf", str(tmp_path / "nowhere"),
                          "--out", str(tmp_path / "x.gguf")], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "nowhere" in bad.stderr and "Traceback" not in bad.stderr


def test_a_sentencepiece_vocabulary_tokenizes_in_llama_cpp_as_in_sentencepiece(tmp_path):
    """Llama 2 / InternLM2 style: tokenizer.model with byte fallback and user-defined symbols.
    llama.cpp puts SentencePiece's space prefix after special tokens too, as transformers'
    `legacy` tokenizers do (with `legacy: false` the text after a special token differs)."""
    spm = pytest.importorskip("sentencepiece")
    from fullchain.tokenizer import Tokenizer
    corpus = [*TEXTS, "今天天气很好，我们去公园散步吧。", "Ünïcödé àccents: café, naïve.",
              "def add(a, b):\n    return a + b"] * 5
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=proto, vocab_size=300, model_type="bpe",
        byte_fallback=True, character_coverage=0.99, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        user_defined_symbols=["<|im_start|>", "<|im_end|>"], unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, minloglevel=2, num_threads=1)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tokenizer.model").write_bytes(proto.getvalue())
    (tmp_path / "model" / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "bos_token": "<s>",
         "eos_token": "</s>", "unk_token": "<unk>", "legacy": True}))
    save_model(tiny(vocab_size=320, bos_token_id=1, eos_token_id=2), tmp_path / "model")
    tok = Tokenizer.from_dir(tmp_path / "model")
    out = export_gguf(tmp_path / "model", tmp_path / "m.gguf")
    fields, _ = read(out)
    assert fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.tokens"][:3] == ["<unk>", "<s>", "</s>"]
    assert fields["tokenizer.ggml.token_type"][3] == 4  # <|im_start|>: user-defined
    assert fields["tokenizer.ggml.token_type"][5] == 6  # byte pieces follow
    with llama(out) as llm:
        for text in ["The quick brown fox number 123 jumps, and runs home.",
                     "今天天气很好 and Ünïcödé 😀", "<|im_start|>user\nhi<|im_end|>",
                     "  two  spaces\n\nand lines"]:
            assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok.encode(
                text, add_special_tokens=True)
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(  # the default normalizer (NFKC, spaces collapsed)
        sentence_iterator=iter(corpus), model_writer=proto, vocab_size=300, model_type="bpe",
        byte_fallback=True, character_coverage=0.99, minloglevel=2, num_threads=1)
    (tmp_path / "model" / "tokenizer.model").write_bytes(proto.getvalue())
    with pytest.raises(CheckpointError, match="normalizer"):
        export_gguf(tmp_path / "model", tmp_path / "n.gguf")
