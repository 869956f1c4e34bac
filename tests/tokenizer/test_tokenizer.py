"""Tokenizer loading, saving, HF parity, sentencepiece parity, bad input and content hash."""

from __future__ import annotations

import json

import pytest

from fullchain.config import TokenizerError
from fullchain.tokenizer import Tokenizer, train_bpe

EXTRA_TEXTS = [
    "", " ", "\n", "  \t \n ", "a" * 50, "<|im_start|>user\nhi<|im_end|>\n",
    "text<|endoftext|>more text", "unseen script: ॐ नमस्ते, ⚡, 𝄞 and 🦀",
]


@pytest.fixture(scope="module")
def texts(samples):
    return samples + EXTRA_TEXTS


@pytest.fixture(scope="module")
def hf_bpe(bpe_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(bpe_dir)


@pytest.mark.parametrize("add_special_tokens", [False, True])
def test_saved_bpe_matches_transformers(bpe_dir, hf_bpe, texts, add_special_tokens):
    tok = Tokenizer.from_dir(bpe_dir)
    for text in texts:
        ours = tok.encode(text, add_special_tokens=add_special_tokens)
        assert ours == hf_bpe.encode(text, add_special_tokens=add_special_tokens), text
        for skip in (False, True):
            assert tok.decode(ours, skip_special_tokens=skip) == hf_bpe.decode(
                ours, skip_special_tokens=skip), text
    assert tok.vocab_size == len(hf_bpe)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (
        hf_bpe.bos_token_id, hf_bpe.eos_token_id, hf_bpe.pad_token_id)


def test_bpe_round_trip_and_bos(bpe, texts):
    for text in texts:
        assert bpe.decode(bpe.encode(text)) == text
        with_bos = bpe.encode(text, add_special_tokens=True)
        assert with_bos[0] == bpe.bos_token_id and with_bos[1:] == bpe.encode(text)
        assert bpe.decode(with_bos, skip_special_tokens=True) == text.replace("<|im_start|>", "") \
            .replace("<|im_end|>", "").replace("<|endoftext|>", "")


@pytest.mark.parametrize("backend", ["bpe", "sentencepiece"])
def test_encode_batch_equals_encode(bpe_dir, sp_dir, texts, backend):
    if backend == "sentencepiece":
        pytest.importorskip("sentencepiece")
    tok = Tokenizer.from_dir(bpe_dir if backend == "bpe" else sp_dir)
    for special in (False, True):
        assert tok.encode_batch(texts, add_special_tokens=special) == [
            tok.encode(t, add_special_tokens=special) for t in texts]
    assert tok.encode_batch([]) == []
    with pytest.raises(TypeError, match="strs"):
        tok.encode_batch(["a", 3])


def test_reload_keeps_everything(bpe, bpe_dir):
    tok = Tokenizer.from_dir(bpe_dir)
    assert tok.content_hash() == bpe.content_hash()
    assert tok.chat_template == bpe.chat_template
    assert tok.stop_token_ids == [tok.token_to_id(t) for t in
                                  ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>",
                                   "<|action_end|>")]
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (
        "<|begin_of_text|>", "<|endoftext|>", "<|endoftext|>")
    assert tok.id_to_token(tok.token_to_id("<|im_end|>")) == "<|im_end|>"
    assert tok.token_to_id("no such token") is None and tok.id_to_token(10**9) is None
    config = json.loads((bpe_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["added_tokens_decoder"][str(tok.eos_token_id)]["content"] == "<|endoftext|>"
    assert (bpe_dir / "chat_template.jinja").read_text() == bpe.chat_template


def test_config_added_tokens_are_added(bpe_dir, tmp_path):
    for name in ("tokenizer.json", "chat_template.jinja"):
        (tmp_path / name).write_bytes((bpe_dir / name).read_bytes())
    config = json.loads((bpe_dir / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"]["99999"] = {"content": "<|new|>", "special": True}
    config["unk_token"] = "<unk>"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.from_dir(tmp_path)
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert tok.vocab_size == len(hf)
    text = "a<|new|>b<unk>c"
    assert tok.encode(text) == hf.encode(text, add_special_tokens=False)


def test_chat_template_sources_and_precedence(bpe_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "tokenizer.json").write_bytes((bpe_dir / "tokenizer.json").read_bytes())
    config = {"eos_token": "<|endoftext|>", "sep_token": "<|im_end|>",
              "chat_template": [{"name": "default", "template": "D{{ sep_token }}"},
                                {"name": "tool_use", "template": "T{{ tools | length }}"}]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.from_dir(tmp_path)
    hi = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(hi) == "D<|im_end|>"
    assert tok.apply_chat_template(hi, tools=[]) == "T0"
    (tmp_path / "chat_template.jinja").write_text("J{{ eos_token }}")  # overrides "default"
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.apply_chat_template(hi) == "J<|endoftext|>"
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf.apply_chat_template(hi, tokenize=False) == "J<|endoftext|>"
    tok.save(tmp_path / "saved")
    again = Tokenizer.from_dir(tmp_path / "saved")
    assert again.apply_chat_template(hi, tools=[]) == "T0"
    assert again.apply_chat_template(hi) == "J<|endoftext|>"


# ------------------------------------------------------------------ sentencepiece

def sp_texts(texts):
    # transformers' converted Metaspace adds no prefix space to text that already starts with
    # whitespace, sentencepiece does: compare only where both define the same ids.
    return [t for t in texts if t and not t[0].isspace()]


def test_sentencepiece_matches_sentencepiece(sp_dir, sp_proto, texts):
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_proto=sp_proto)
    tok = Tokenizer.from_dir(sp_dir)
    assert tok.backend_kind == "tokenizer.model"
    assert tok.vocab_size == sp.get_piece_size()
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    # Plain text: sentencepiece's own ids. (Text holding special or user-defined tokens is split
    # on them first, as transformers does; the next test covers it.)
    for text in [t for t in texts if "<|" not in t]:
        assert tok.encode(text) == sp.encode(text), text
        assert tok.encode(text, add_special_tokens=True) == [1] + sp.encode(text)
        assert tok.decode(tok.encode(text)) == sp.decode(sp.encode(text)) == text


def test_sentencepiece_matches_transformers_llama(sp_dir, tmp_path, texts):
    transformers = pytest.importorskip("transformers")
    tok = Tokenizer.from_dir(sp_dir)
    tok.save(tmp_path)
    for folder in (sp_dir, tmp_path):
        hf = transformers.AutoTokenizer.from_pretrained(folder)
        assert len(hf) == tok.vocab_size
        for text in sp_texts(texts) + ["<s>after bos", "x</s> y", "a<|im_end|>b"]:
            for special in (False, True):
                assert tok.encode(text, add_special_tokens=special) == hf.encode(
                    text, add_special_tokens=special), (folder, text)
    assert Tokenizer.from_dir(tmp_path).content_hash() == tok.content_hash()


def test_sentencepiece_special_tokens_in_text(sp_dir):
    tok = Tokenizer.from_dir(sp_dir)
    for text in ["<s>Hello</s> world", "a<|im_start|>b c<|im_end|>\n", "<unk> x", "</s> y"]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        with_bos = tok.encode(text, add_special_tokens=True)
        assert tok.decode(with_bos) == "<s>" + text
    ids = tok.encode("<s>Hi</s>")
    assert ids[0] == 1 and ids[-1] == 2
    assert tok.decode(ids, skip_special_tokens=True) == "Hi"


def test_saving_sentencepiece_over_a_tokenizer_json(sp_dir, bpe_dir, tmp_path):
    (tmp_path / "tokenizer.json").write_bytes((bpe_dir / "tokenizer.json").read_bytes())
    tok = Tokenizer.from_dir(sp_dir)
    tok.save(tmp_path)
    again = Tokenizer.from_dir(tmp_path)
    assert again.backend_kind == "tokenizer.model"
    assert again.content_hash() == tok.content_hash()


# ------------------------------------------------------------------ bad input


def test_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(TokenizerError, match=str(missing)):
        Tokenizer.from_dir(missing)


def test_folder_without_tokenizer_file(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(TokenizerError, match=str(tmp_path)) as info:
        Tokenizer.from_dir(tmp_path)
    assert "tokenizer.json" in str(info.value) and "tokenizer.model" in str(info.value)


def test_corrupt_tokenizer_json(bpe_dir, tmp_path):
    text = (bpe_dir / "tokenizer.json").read_text()
    (tmp_path / "tokenizer.json").write_text(text[: len(text) // 2])
    with pytest.raises(TokenizerError, match=str(tmp_path / "tokenizer.json")):
        Tokenizer.from_dir(tmp_path)


def test_corrupt_tokenizer_config(bpe_dir, tmp_path):
    (tmp_path / "tokenizer.json").write_bytes((bpe_dir / "tokenizer.json").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text('{"bos_token": ')
    with pytest.raises(TokenizerError, match=str(tmp_path / "tokenizer_config.json")):
        Tokenizer.from_dir(tmp_path)


def test_corrupt_tokenizer_model(tmp_path):
    pytest.importorskip("sentencepiece")
    (tmp_path / "tokenizer.model").write_bytes(b"\x00not a sentencepiece model\xff" * 10)
    with pytest.raises(TokenizerError, match=str(tmp_path / "tokenizer.model")):
        Tokenizer.from_dir(tmp_path)


# ------------------------------------------------------------------ content hash


def test_content_hash_stable_across_saves(bpe, tmp_path):
    bpe.save(tmp_path / "a")
    bpe.save(tmp_path / "b")
    # Re-serialize one copy with different whitespace: the hash must not see file layout.
    data = json.loads((tmp_path / "b" / "tokenizer.json").read_text())
    (tmp_path / "b" / "tokenizer.json").write_text(json.dumps(data, separators=(",", ":")))
    hashes = {Tokenizer.from_dir(tmp_path / d).content_hash() for d in ("a", "b")}
    assert hashes == {bpe.content_hash()}
    assert len(bpe.content_hash()) == 64


def test_content_hash_differs_for_other_vocab(bpe, corpus):
    other = train_bpe(corpus[:400], vocab_size=900, special_tokens=["<|endoftext|>"],
                      eos_token="<|endoftext|>")
    assert other.content_hash() != bpe.content_hash()
    same_vocab_other_eos = train_bpe(corpus[:400], vocab_size=900,
                                     special_tokens=["<|endoftext|>"])
    assert same_vocab_other_eos.content_hash() != other.content_hash()
