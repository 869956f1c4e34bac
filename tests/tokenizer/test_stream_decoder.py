"""StreamDecoder: no partial characters, and the pieces add up to the full decode."""

from __future__ import annotations

import pytest

from fullchain.tokenizer import StreamDecoder, Tokenizer

TEXT = "流式输出：你好，世界！😀🎉 emoji 👨‍👩‍👧 and 中文混合 text. ॐ 𝄞 🦀🦀 完。"


def stream(tok: Tokenizer, ids: list[int], **kwargs) -> list[str]:
    decoder = tok.stream_decoder(**kwargs)
    pieces = [decoder.push(i) for i in ids]
    return pieces + [decoder.flush()]


@pytest.mark.parametrize("backend", ["bpe", "sp_dir"])
def test_stream_never_splits_characters(request, backend):
    fixture = request.getfixturevalue(backend)
    tok = fixture if isinstance(fixture, Tokenizer) else Tokenizer.from_dir(fixture)
    ids = tok.encode(TEXT, add_special_tokens=True)
    # The text must really hit partial characters, or this test proves nothing.
    assert any("\ufffd" in tok.decode([i]) for i in ids)
    for skip in (False, True):
        pieces = stream(tok, ids, skip_special_tokens=skip)
        assert not any("\ufffd" in piece for piece in pieces)
        assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip)
    assert "".join(stream(tok, ids, skip_special_tokens=True)) == TEXT


def test_stream_emits_as_soon_as_characters_complete(bpe):
    decoder = bpe.stream_decoder()
    ids = bpe.encode("ab 🦀")
    pieces = [decoder.push(i) for i in ids]
    assert pieces[0] != ""  # ASCII comes out right away
    assert "".join(pieces) == "ab 🦀" and decoder.flush() == ""


def test_stream_lets_invalid_bytes_through_eventually(bpe):
    lone = bpe.token_to_id("Ã")  # byte 0xC3: starts a 2-byte character that never completes
    decoder = StreamDecoder(lambda ids: bpe.decode(ids))
    out = "".join(decoder.push(lone) for _ in range(20)) + decoder.flush()
    assert out == bpe.decode([lone] * 20)
