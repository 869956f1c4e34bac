"""Backend over a sentencepiece model (`tokenizer.model`: Llama-2, InternLM2).

Text is first split on added tokens, as transformers' converted Llama tokenizer does: the
model's control, unknown and user-defined pieces, the `added_tokens_decoder` entries and the
bos/eos/pad/unk strings. Each piece of text between them goes through sentencepiece. Only the
first piece gets sentencepiece's dummy-prefix space (as transformers' Llama tokenizer with
`legacy=False`); set `"legacy": true` in tokenizer_config.json to prefix every piece, as older
slow tokenizers did.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from fullchain.config import TokenizerError
from fullchain.tokenizer.files import AddedToken

FILENAME = "tokenizer.model"
_INSTALL_HINT = "install the sentencepiece extra: pip install 'fullchain[sentencepiece]'"


def _import_sentencepiece():
    try:
        import sentencepiece
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as exc:
        raise TokenizerError(f"reading tokenizer.model needs sentencepiece and protobuf; "
                             f"{_INSTALL_HINT}") from exc
    return sentencepiece, sentencepiece_model_pb2


def _pieces(processor, text: str):
    # sentencepiece 0.2.1 renamed the offset-carrying encoder; accept both spellings.
    encode = getattr(processor, "encode_as_proto", None) or processor.encode_as_immutable_proto
    return encode(text).pieces


def _model_added_tokens(model) -> dict[int, AddedToken]:
    """The model's unknown, control and user-defined pieces: transformers' converter turns them
    into added tokens (the first two special), so text is split on them before sentencepiece."""
    kinds = {model.SentencePiece.UNKNOWN: True, model.SentencePiece.CONTROL: True,
             model.SentencePiece.USER_DEFINED: False}
    return {
        i: AddedToken(id=i, content=piece.piece, special=kinds[piece.type])
        for i, piece in enumerate(model.pieces) if piece.type in kinds
    }


class SentencePieceBackend:
    """Encodes, decodes and saves through `sentencepiece`, with HF-style added tokens."""

    filename = FILENAME
    tokenizer_class = "LlamaTokenizer"

    def __init__(self, proto: bytes, *, added: Iterable[AddedToken], specials: Iterable[str],
                 add_bos: bool = True, add_eos: bool = False, legacy: bool = False,
                 bos_token: str | None = None, eos_token: str | None = None):
        spm, model_pb2 = _import_sentencepiece()
        self.proto = proto
        self.sp = spm.SentencePieceProcessor(model_proto=proto)
        model = model_pb2.ModelProto()
        model.ParseFromString(proto)
        self.sp_plain = self.sp  # processor for text that follows a special token
        if model.normalizer_spec.add_dummy_prefix and not legacy:
            model.normalizer_spec.add_dummy_prefix = False
            self.sp_plain = spm.SentencePieceProcessor(model_proto=model.SerializeToString())
        self.add_bos, self.add_eos, self.legacy = add_bos, add_eos, legacy
        self.size = self.sp.get_piece_size()
        self._added: dict[int, AddedToken] = _model_added_tokens(model)
        self._register(added, specials)
        self.bos_id = self.token_to_id(bos_token) if bos_token else None
        self.eos_id = self.token_to_id(eos_token) if eos_token else None

    @classmethod
    def load(cls, path: Path, **kwargs) -> SentencePieceBackend:
        proto = path.read_bytes()
        try:
            return cls(proto, **kwargs)
        except TokenizerError:
            raise
        except Exception as exc:  # sentencepiece and protobuf raise assorted types on bad bytes
            raise TokenizerError(
                f"{path} is not a sentencepiece model ({exc}); restore the model's tokenizer.model"
            ) from exc

    def _register(self, added: Iterable[AddedToken], specials: Iterable[str]) -> None:
        """Record the config's added tokens and the special strings (appending those the model
        lacks, as transformers does), and build the regex that splits text on all of them."""
        for token in added:
            self._added[token.id] = token
        known = {t.content for t in self._added.values()}
        next_id = max([self.size - 1, *self._added]) + 1
        for text in specials:
            if not text or text in known:
                continue
            piece_id = self.sp.piece_to_id(text)
            if self.sp.id_to_piece(piece_id) != text:  # not in the model: append like HF does
                piece_id, next_id = next_id, next_id + 1
            self._added[piece_id] = AddedToken(id=piece_id, content=text, special=True)
            known.add(text)
        self._ids_by_text = {t.content: i for i, t in self._added.items()}
        texts = sorted(self._ids_by_text, key=len, reverse=True)  # longest match wins
        self._split_re = re.compile("|".join(map(re.escape, texts))) if texts else None

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        ids = self.encode_with_offsets(text)[0]
        if add_special_tokens:
            bos = [self.bos_id] if self.add_bos and self.bos_id is not None else []
            eos = [self.eos_id] if self.add_eos and self.eos_id is not None else []
            ids = bos + ids + eos
        return ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        return [self.encode(text, add_special_tokens) for text in texts]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids without BOS/EOS and each token's (start, end) character offsets in `text`."""
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        pos = 0
        matches = self._split_re.finditer(text) if self._split_re else ()
        for match in matches:
            self._encode_text(text[pos:match.start()], pos, ids, offsets)
            ids.append(self._ids_by_text[match.group()])
            offsets.append(match.span())
            pos = match.end()
        self._encode_text(text[pos:], pos, ids, offsets)
        return ids, offsets

    def _encode_text(self, chunk: str, start: int, ids: list, offsets: list) -> None:
        if not chunk:
            return
        processor = self.sp if start == 0 or self.legacy else self.sp_plain
        # sentencepiece reports byte offsets; map them to character offsets of the whole text.
        byte_starts = [0]
        for char in chunk:
            byte_starts.append(byte_starts[-1] + len(char.encode("utf-8")))
        for piece in _pieces(processor, chunk):
            begin = min(bisect.bisect_right(byte_starts, piece.begin) - 1, len(chunk) - 1)
            end = bisect.bisect_left(byte_starts, piece.end)
            if self.sp.is_byte(piece.id):
                # All but the last byte piece of a character are reported empty; give each the
                # whole character so masks by offset see them.
                end = max(end, begin + 1)
            ids.append(piece.id)
            offsets.append((start + begin, start + end))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        """Runs of model ids go through sentencepiece. The run that opens the text (nothing but
        BOS before it) drops the dummy-prefix space that encode added; later runs follow an added
        token, were encoded without that space, and keep their leading space."""
        parts: list[str] = []
        run: list[int] = []
        opening = True  # only BOS ids seen so far
        for index in ids:
            if index in self._added or not 0 <= index < self.size:
                if run:
                    parts.append(self._decode_run(run, opening))
                    run, opening = [], False
                opening = opening and index == self.bos_id
                if not (skip_special_tokens and self._is_special(index)):
                    parts.append(self.id_to_token(index) or "")
            else:
                run.append(index)
        if run:
            parts.append(self._decode_run(run, opening))
        return "".join(parts)

    def _decode_run(self, run: list[int], opening: bool) -> str:
        return (self.sp if opening else self.sp_plain).decode(run)

    def _is_special(self, index: int) -> bool:
        token = self._added.get(index)
        return token.special if token else True

    def token_to_id(self, token: str) -> int | None:
        if token in self._ids_by_text:
            return self._ids_by_text[token]
        piece_id = self.sp.piece_to_id(token)
        return piece_id if self.sp.id_to_piece(piece_id) == token else None

    def id_to_token(self, index: int) -> str | None:
        if index in self._added:
            return self._added[index].content
        return self.sp.id_to_piece(index) if 0 <= index < self.size else None

    @property
    def vocab_size(self) -> int:
        return self.size + sum(1 for i in self._added if i >= self.size)

    def added_tokens(self) -> list[AddedToken]:
        return [self._added[i] for i in sorted(self._added)]

    def fingerprint(self) -> dict:
        """Pieces with scores and kinds (scores drive sentencepiece's merges) and added tokens."""
        sp = self.sp
        kinds = [sp.is_control, sp.is_unknown, sp.is_byte, sp.is_unused]
        pieces = [[sp.id_to_piece(i), round(sp.get_score(i), 6), [k(i) for k in kinds]]
                  for i in range(self.size)]
        added = [[t.id, t.content, t.special] for t in self.added_tokens()]
        return {"type": "sentencepiece", "pieces": pieces, "added": added}

    def save(self, folder: Path) -> None:
        (folder / FILENAME).write_bytes(self.proto)

    def config_fields(self) -> dict:
        return {"add_bos_token": self.add_bos, "add_eos_token": self.add_eos, "legacy": self.legacy}
