"""Packed pretraining batches over token shards, in a deterministic order that can be resumed.

The stream of a shard is cut into windows of `seq_len + 1` tokens; each epoch visits the windows
in a permutation drawn from (seed, epoch). Inside a window, positions restart at every document
start and `doc_ids` number the documents, so attention can be masked per document.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from fullchain.config import DataError
from fullchain.formats.tokens import TokenDataset


class DataChangedError(DataError):
    """A checkpoint's loader position belongs to other token data than the run now reads."""


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T]
    targets: torch.Tensor  # [B, T]
    positions: torch.Tensor  # [B, T], restarting at 0 per document (or 0..T-1)
    doc_ids: torch.Tensor  # [B, T], equal within a document


class PackedLoader:
    """Windows of a token shard as batches. `state_dict()` is the resume point (epoch, cursor)."""

    def __init__(self, dataset: TokenDataset, *, seq_len: int, batch_size: int, seed: int,
                 reset_positions: bool = True, shuffle: bool = True) -> None:
        self.ds, self.seq_len, self.batch_size = dataset, seq_len, batch_size
        self.seed, self.reset_positions, self.shuffle = seed, reset_positions, shuffle
        self.num_windows = (dataset.num_tokens - 1) // seq_len
        if self.num_windows < batch_size:
            raise DataError(f"{dataset.bin_path}: {dataset.num_tokens} tokens make only "
                            f"{self.num_windows} windows of {seq_len}; need at least "
                            f"{batch_size} (lower seq_len or batch_size, or add data)")
        ends = dataset.doc_ends.astype(np.int64)
        self.doc_starts = np.concatenate([np.zeros(1, np.int64), ends[:-1]])
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation(0)
        # what a saved position is a position in: the token count and the document boundaries
        digest = hashlib.sha256(ends.tobytes()).hexdigest()[:16]
        self.fingerprint = f"{dataset.num_tokens} tokens, documents {digest}"

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_windows)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "data": self.fingerprint}

    def load_state_dict(self, state: dict) -> None:
        if state.get("data", self.fingerprint) != self.fingerprint:
            raise DataChangedError(
                f"{self.ds.bin_path} is not the token data the checkpoint was trained on "
                f"(then {state['data']}; now {self.fingerprint}): its loader position would "
                "mean nothing here. Train into a new out folder, or delete the run's "
                "checkpoints to start over")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._permutation(self.epoch)

    def window(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tokens [T+1], positions [T+1] and document numbers [T+1] of window `index`."""
        start = index * self.seq_len
        idx = np.arange(start, start + self.seq_len + 1, dtype=np.int64)
        tokens = np.asarray(self.ds.tokens[start:start + self.seq_len + 1], dtype=np.int64)
        doc = np.searchsorted(self.ds.doc_ends, idx, side="right").astype(np.int64)
        if self.reset_positions:
            positions = idx - np.maximum(self.doc_starts[doc], start)
        else:
            positions = idx - start
        return tokens, positions, doc

    def next_row(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.cursor == self.num_windows:
            self.epoch, self.cursor = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        row = self.window(int(self._order[self.cursor]))
        self.cursor += 1
        return row

    def next_batch(self) -> Batch:
        return to_batch([self.next_row() for _ in range(self.batch_size)])


def to_batch(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Batch:
    tokens, positions, docs = (torch.from_numpy(np.stack(c)) for c in zip(*rows))
    return Batch(tokens[:, :-1], tokens[:, 1:], positions[:, :-1], docs[:, :-1])


class MixtureLoader:
    """Rows drawn from several sources by weight; the draw for row n depends only on (seed, n)."""

    def __init__(self, loaders: list[PackedLoader], weights: list[float], *, batch_size: int,
                 seed: int) -> None:
        total = float(sum(weights))
        self.loaders, self.probs = loaders, np.array(weights, dtype=np.float64) / total
        self.batch_size, self.seed, self.drawn = batch_size, seed, 0

    def state_dict(self) -> dict:
        return {"drawn": self.drawn, "sources": [ld.state_dict() for ld in self.loaders]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["sources"]) != len(self.loaders):
            raise DataChangedError(
                f"the checkpoint was trained on {len(state['sources'])} data sources, the run "
                f"now has {len(self.loaders)}: train into a new out folder, or delete the run's "
                "checkpoints to start over")
        self.drawn = int(state["drawn"])
        for loader, s in zip(self.loaders, state["sources"]):
            loader.load_state_dict(s)

    def next_batch(self) -> Batch:
        rows = []
        for _ in range(self.batch_size):
            pick = np.random.default_rng([self.seed, 1 << 20, self.drawn]).choice(
                len(self.loaders), p=self.probs)
            rows.append(self.loaders[pick].next_row())
            self.drawn += 1
        return to_batch(rows)
