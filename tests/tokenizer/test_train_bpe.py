"""train_bpe: byte-level BPE from texts or files, special tokens and roles."""

from __future__ import annotations

from pathlib import Path

import pytest

from fullchain.config import TokenizerError
from fullchain.tokenizer import train_bpe


def test_digits_are_split_and_specials_first(corpus):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = train_bpe(corpus, vocab_size=700, special_tokens=specials, eos_token="<|endoftext|>")
    assert [tok.token_to_id(t) for t in specials] == [0, 1, 2]
    assert tok.bos_token is None and tok.bos_token_id is None and tok.eos_token_id == 0
    assert len(tok.encode("1234567890")) == 10
    assert tok.encode("x", add_special_tokens=True) == tok.encode("x")  # no BOS configured
    assert tok.encode("<|im_start|>") == [1]
    unseen = "ॐ 𝄞 \x00\x7f"
    assert tok.decode(tok.encode(unseen)) == unseen  # byte-level: no unknown token
    assert 256 < tok.vocab_size <= 700


def test_roles_are_added_and_bos_prepended(corpus):
    tok = train_bpe(corpus[:300], vocab_size=600, special_tokens=["<|endoftext|>"],
                    bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    assert [tok.token_to_id(t) for t in ("<|endoftext|>", "<s>", "</s>", "<pad>")] == [0, 1, 2, 3]
    assert tok.encode("hi", add_special_tokens=True) == [1] + tok.encode("hi")
    no_bos = train_bpe(corpus[:300], vocab_size=600, special_tokens=["<s>"], bos_token="<s>",
                       add_bos_token=False)
    assert no_bos.encode("hi", add_special_tokens=True) == no_bos.encode("hi")


def test_train_from_files(corpus, tmp_path):
    paths = [tmp_path / "a.txt", tmp_path / "b.txt"]
    paths[0].write_text("\n".join(corpus[:700]) + "\n", encoding="utf-8")
    paths[1].write_text("\n".join(corpus[700:]) + "\n", encoding="utf-8")
    kwargs = dict(vocab_size=800, special_tokens=["<|endoftext|>"], eos_token="<|endoftext|>")
    from_paths = train_bpe(paths, **kwargs)
    assert train_bpe([str(p) for p in paths], **kwargs).content_hash() == from_paths.content_hash()
    assert 256 < from_paths.vocab_size <= 800
    text = corpus[0]
    assert from_paths.decode(from_paths.encode(text)) == text
    assert len(from_paths.encode(text)) < len(text.encode("utf-8")) / 2  # merges were learned


def test_bad_arguments(corpus, tmp_path):
    with pytest.raises(TokenizerError, match="vocab_size"):
        train_bpe(corpus, vocab_size=200, special_tokens=["<|endoftext|>"])
    missing = tmp_path / "missing.txt"
    with pytest.raises(TokenizerError, match=str(missing)):
        train_bpe([Path(missing)], vocab_size=600, special_tokens=[])
