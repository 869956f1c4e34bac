"""Incremental detokenization for streaming replies: whole characters (`StreamDecoder`), then
stop strings cut and any tail that could still become one held back (`StopText`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT_CHAR = "\ufffd"
# An unfinished UTF-8 character is at most 3 bytes short, so it completes within a few tokens;
# a tail that stays broken longer is a real invalid byte and is let through (else we would stall).
MAX_HELD_TOKENS = 8


class StreamDecoder:
    """Turns token ids, pushed one at a time, into text pieces.

    Contract: `push` returns the new text (possibly "") and never ends a piece with a partial
    multi-byte character (it holds tokens back while their decoding ends with U+FFFD, up to
    MAX_HELD_TOKENS); `flush` returns whatever is held. The concatenation of all pieces equals
    `decode(all ids)` for decoders whose output for a window of ids extends that of its prefix
    (byte-level BPE and sentencepiece do).

    It decodes a small window: the last emitted tokens (context, so sentencepiece's leading-space
    handling and byte merges see their neighbours) plus the held ones, so the cost per token does
    not grow with the length of the reply.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]):
        self._decode = decode
        self._window: list[int] = []  # context tokens, then not-yet-emitted tokens
        self._read = 0  # index in _window of the first not-yet-emitted token
        self._context_text = ""  # decode(_window[:_read])

    def push(self, token_id: int) -> str:
        """Add one token id; return the text that is now final."""
        self._window.append(int(token_id))
        text = self._decode(self._window)
        held = len(self._window) - self._read
        if text.endswith(REPLACEMENT_CHAR) and held < MAX_HELD_TOKENS:
            return ""
        return self._emit(text)

    def flush(self) -> str:
        """Return everything still held (call once the stream ends)."""
        if self._read == len(self._window):
            return ""
        return self._emit(self._decode(self._window))

    def _emit(self, text: str) -> str:
        piece = text[len(self._context_text):]
        # The tokens just emitted become the context of the next window.
        self._window = self._window[self._read:]
        self._read = len(self._window)
        self._context_text = self._decode(self._window)
        return piece


class StopText:
    """Push token ids one at a time; ``push`` returns (new text, the stop string hit or None).

    Text comes from a :class:`StreamDecoder` (never a partial character). The earliest stop
    string is cut (kept when ``include_stop``) and ends the stream; a tail that could still grow
    into a stop string is held back until it cannot. Used by the engine and the reference loop.
    """

    def __init__(self, decoder: StreamDecoder, stop: Sequence[str], *,
                 include_stop: bool = False) -> None:
        self.decoder = decoder
        self.stop, self.include_stop = [s for s in stop if s], include_stop
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
