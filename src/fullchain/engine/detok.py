"""Incremental text of one output: never splits a multi-byte character, cuts stop strings and
holds back any tail that could still become one."""

from __future__ import annotations

from collections.abc import Sequence

from fullchain.tokenizer import Tokenizer


class OutputText:
    """Push token ids one at a time; `push` returns (new text, the stop string hit or None)."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str], *, skip_special_tokens: bool,
                 include_stop: bool = False) -> None:
        self.decoder = tokenizer.stream_decoder(skip_special_tokens=skip_special_tokens)
        self.stop, self.include_stop = list(stop), include_stop
        self.text = ""  # all decoded text so far
        self.emitted = 0  # characters of `text` handed out
        self.stopped = False

    def push(self, token_id: int) -> tuple[str, str | None]:
        if self.stopped:
            return "", None
        self.text += self.decoder.push(token_id)
        return self._scan()

    def flush(self) -> str:
        """The held-back tail, at the end of the output (no stop string matched it)."""
        if self.stopped:
            return ""
        self.text += self.decoder.flush()
        delta = self.text[self.emitted:]
        self.emitted = len(self.text)
        return delta

    def _scan(self) -> tuple[str, str | None]:
        longest = max((len(s) for s in self.stop), default=0)
        search_from = max(0, self.emitted - longest + 1)
        hits = [(i, s) for s in self.stop if (i := self.text.find(s, search_from)) != -1]
        if hits:
            at, s = min(hits)
            end = at + len(s) if self.include_stop else at
            self.stopped = True
            self.text = self.text[:end]
            delta = self.text[self.emitted:]
            self.emitted = len(self.text)
            return delta, s
        hold = max((k for s in self.stop for k in range(1, len(s))
                    if self.text.endswith(s[:k])), default=0)
        end = max(self.emitted, len(self.text) - hold)
        delta = self.text[self.emitted:end]
        self.emitted = end
        return delta, None

    @property
    def final_text(self) -> str:
        return self.text
