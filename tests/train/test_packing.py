"""Packed windows: document masks, per-document positions, and a resumable order."""

import numpy as np
import torch

from fullchain.formats.tokens import TokenDataset, write_token_dataset
from fullchain.model import DocumentAttention, ModelConfig, Transformer
from fullchain.train.data import PackedLoader


def make_dataset(tmp_path, docs):
    write_token_dataset(tmp_path, {"train": docs}, tokenizer_hash="h", vocab_size=50,
                        eos_token_id=0, lineage={})
    return TokenDataset(tmp_path, "train")


def test_positions_restart_per_document(tmp_path):
    ds = make_dataset(tmp_path, [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15]])
    loader = PackedLoader(ds, seq_len=6, batch_size=1, seed=0, shuffle=False)
    tokens, positions, doc = loader.window(0)
    # stream: 5 6 7 0 | 8 9 0 | 10 ...
    assert tokens.tolist() == [5, 6, 7, 0, 8, 9, 0]
    assert positions.tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert doc.tolist() == [0, 0, 0, 0, 1, 1, 1]
    tokens, positions, _ = loader.window(1)  # starts inside the third document at its start
    assert tokens.tolist()[:2] == [0, 10] and positions.tolist()[:3] == [0, 0, 1]


def test_packed_logits_equal_documents_alone():
    cfg = ModelConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=48)
    model = Transformer(cfg)
    model.init_weights(seed=0)
    model.eval()
    docs = [torch.randint(1, 50, (n,)) for n in (5, 9, 3)]
    packed = torch.cat(docs)[None]
    positions = torch.cat([torch.arange(len(d)) for d in docs])[None]
    doc_ids = torch.cat([torch.full((len(d),), i) for i, d in enumerate(docs)])[None]
    with torch.no_grad():
        together = model(packed, positions=positions, attention=DocumentAttention(doc_ids))[0]
        alone = torch.cat([model(d[None])[0] for d in docs])
    assert (together - alone).abs().max() < 1e-5


def test_loader_order_is_seeded_and_resumable(tmp_path):
    rng = np.random.default_rng(0)
    ds = make_dataset(tmp_path, [rng.integers(1, 50, 20).tolist() for _ in range(30)])
    a = PackedLoader(ds, seq_len=16, batch_size=4, seed=7)
    first = [a.next_batch().input_ids for _ in range(3)]
    state = a.state_dict()
    rest = [a.next_batch().input_ids for _ in range(20)]  # crosses an epoch boundary
    b = PackedLoader(ds, seq_len=16, batch_size=4, seed=7)
    assert all(torch.equal(x, b.next_batch().input_ids) for x in first)
    c = PackedLoader(ds, seq_len=16, batch_size=4, seed=7)
    c.load_state_dict(state)
    assert all(torch.equal(x, c.next_batch().input_ids) for x in rest)
    other = PackedLoader(ds, seq_len=16, batch_size=4, seed=8)
    assert not torch.equal(first[0], other.next_batch().input_ids)
