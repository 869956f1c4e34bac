"""Backend over an HF `tokenizers` model (`tokenizer.json`), the file every fast tokenizer ships."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import tokenizers

from fullchain.config import TokenizerError
from fullchain.tokenizer.files import AddedToken

FILENAME = "tokenizer.json"


class HFBackend:
    """Encodes, decodes and saves through a `tokenizers.Tokenizer`.

    Ids equal `PreTrainedTokenizerFast` on the same file: added tokens are matched by the
    library, and `add_special_tokens=True` runs the file's own post-processor (transformers 5
    ignores `add_bos_token` in tokenizer_config.json when a tokenizer.json is present).
    """

    filename = FILENAME
    tokenizer_class = "PreTrainedTokenizerFast"

    def __init__(self, tokenizer: tokenizers.Tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, path: Path, added: Iterable[AddedToken], specials: Iterable[str]) -> HFBackend:
        """Read `path` and add the config's added/special tokens that the file lacks (as
        transformers does on load, so ids and vocab size agree)."""
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on any parse error
            raise TokenizerError(
                f"{path} cannot be read by the tokenizers library ({exc}); the file is corrupt or "
                "from a newer tokenizers version: restore it or upgrade tokenizers"
            ) from exc
        backend = cls(tokenizer)
        backend.add_missing(added, specials)
        return backend

    def add_missing(self, added: Iterable[AddedToken], specials: Iterable[str]) -> None:
        """Add tokens absent from the vocabulary; ids are assigned after the current last one."""
        new = [t for t in added if self.tokenizer.token_to_id(t.content) is None]
        contents = {t.content for t in new}
        for text in specials:
            if text and self.tokenizer.token_to_id(text) is None and text not in contents:
                new.append(AddedToken(id=-1, content=text, special=True))
                contents.add(text)
        for token in new:
            spec = tokenizers.AddedToken(
                token.content, single_word=token.single_word, lstrip=token.lstrip,
                rstrip=token.rstrip, normalized=token.normalized, special=token.special,
            )
            if token.special:
                self.tokenizer.add_special_tokens([spec])
            else:
                self.tokenizer.add_tokens([spec])

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        batch = self.tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
        return [encoding.ids for encoding in batch]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids without special tokens and each token's (start, end) character offsets."""
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        return encoding.ids, [tuple(o) for o in encoding.offsets]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def id_to_token(self, index: int) -> str | None:
        return self.tokenizer.id_to_token(index) if index >= 0 else None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def added_tokens(self) -> list[AddedToken]:
        return [
            AddedToken(id=i, content=t.content, special=t.special, lstrip=t.lstrip,
                       rstrip=t.rstrip, normalized=t.normalized, single_word=t.single_word)
            for i, t in sorted(self.tokenizer.get_added_tokens_decoder().items())
        ]

    def fingerprint(self) -> dict:
        """What gives ids their meaning: base vocabulary in id order, merges, added tokens.

        Read from the model section only (not pre-tokenizer or file layout), and merges are
        normalized to pairs, because tokenizers versions serialize them as "a b" or ["a", "b"].
        """
        import json

        model = json.loads(self.tokenizer.to_str()).get("model", {})
        vocab = self.tokenizer.get_vocab(with_added_tokens=False)
        merges = [m.split(" ", 1) if isinstance(m, str) else list(m)
                  for m in model.get("merges", [])]
        added = [[t.id, t.content, t.special] for t in self.added_tokens()]
        return {
            "type": model.get("type"),
            "vocab": sorted((i, tok) for tok, i in vocab.items()),
            "merges": merges,
            "added": added,
        }

    def save(self, folder: Path) -> None:
        self.tokenizer.save(str(folder / FILENAME), pretty=True)

    def config_fields(self) -> dict:
        return {}
