"""Tiny tokenizers built in the test session: nothing is downloaded."""

from __future__ import annotations

import io
import random

import pytest

from fullchain.tokenizer import get_builtin_template, train_bpe

CHAT_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>",
    "<|action_start|>", "<|action_end|>", "<|plugin|>", "<|interpreter|>",
]

# Text that exercises byte-level BPE: CJK, emoji (incl. ZWJ sequences and flags), code,
# runs of spaces, tabs, newlines, digits, accents.
SAMPLES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! It's 2024-07-26 and the price is $1,234.56.",
    "今天天气很好，我们去公园散步吧。",
    "书生·浦语是一个大语言模型。北京是中国的首都。",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧 🇫🇷 ❤️",
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i];\n}",
    "   leading spaces, trailing spaces   ",
    "line one\n\n\nline four\r\nwindows line",
    "Ünïcödé àccents: café, naïve, Zürich, São Paulo.",
    "Mixed 中文 and English 混合 text 123 数字 456.",
    "JSON: {\"name\": \"get_weather\", \"arguments\": {\"city\": \"巴黎\"}}",
]


def make_corpus(num_lines: int = 1500, seed: int = 0) -> list[str]:
    """Deterministic mixed-language lines built from SAMPLES and random recombinations."""
    rng = random.Random(seed)
    words = " ".join(SAMPLES).split(" ")
    lines = list(SAMPLES) * 20
    for _ in range(num_lines):
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 15))))
    return lines


@pytest.fixture(scope="session")
def samples() -> list[str]:
    return list(SAMPLES)


@pytest.fixture(scope="session")
def chat_specials() -> list[str]:
    return list(CHAT_SPECIALS)


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="session")
def bpe(corpus):
    """A Llama-3-style byte-level BPE: BOS prepended with add_special_tokens, chat specials."""
    tok = train_bpe(corpus, vocab_size=1200, special_tokens=CHAT_SPECIALS,
                    bos_token="<|begin_of_text|>", eos_token="<|endoftext|>",
                    pad_token="<|endoftext|>")
    tok.chat_template = get_builtin_template("chatml")
    return tok


@pytest.fixture(scope="session")
def bpe_dir(bpe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bpe")
    bpe.save(folder)
    return folder


@pytest.fixture(scope="session")
def sp_proto(corpus) -> bytes:
    """A sentencepiece BPE model with byte fallback and ChatML user-defined symbols."""
    spm = pytest.importorskip("sentencepiece")
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=out, vocab_size=800, model_type="bpe",
        byte_fallback=True, character_coverage=0.9995, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True,
        user_defined_symbols=["<|im_start|>", "<|im_end|>"],
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, num_threads=1,
    )
    return out.getvalue()


@pytest.fixture(scope="session")
def sp_dir(sp_proto, tmp_path_factory):
    import json

    folder = tmp_path_factory.mktemp("spm")
    (folder / "tokenizer.model").write_bytes(sp_proto)
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "legacy": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder
