"""HF model folders: written by fullchain and read by transformers, and the other way round."""

import json

import pytest
import torch

from fullchain.checkpoint import load_config, load_model, save_model
from fullchain.config import CheckpointError
from fullchain.model import ModelConfig, Transformer

transformers = pytest.importorskip("transformers")

CFG = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, intermediate_size=96, max_position_embeddings=128)


def tiny(**kw) -> Transformer:
    model = Transformer(ModelConfig(**{**CFG, **kw}))
    model.init_weights(seed=3)
    return model.eval()


@pytest.mark.parametrize("kw", [dict(tie_word_embeddings=True),
                                dict(qkv_bias=True, architecture="Qwen2ForCausalLM"),
                                dict(rope_scaling={"type": "dynamic", "factor": 2.0})])
def test_fullchain_folder_loads_in_transformers(tmp_path, kw):
    model = tiny(**kw)
    save_model(model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["architectures"] == [model.config.architecture]
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.float32)
    ids = torch.randint(0, 300, (1, 20))
    with torch.no_grad():
        assert torch.allclose(model(ids), hf(input_ids=ids).logits, atol=1e-4)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert ("lm_head.weight" in f.keys()) != model.config.tie_word_embeddings


@pytest.mark.parametrize("shard,family", [("50KB", "llama"), (None, "llama"), (None, "qwen2"),
                                          (None, "mistral")])
def test_transformers_folder_loads_in_fullchain(tmp_path, shard, family):
    hf_cfg = transformers.AutoConfig.for_model(family, **CFG, tie_word_embeddings=False)
    hf = transformers.AutoModelForCausalLM.from_config(hf_cfg).eval()
    kwargs = {"max_shard_size": shard} if shard else {}
    hf.save_pretrained(tmp_path, **kwargs)
    if shard:
        assert (tmp_path / "model.safetensors.index.json").exists()
    model = load_model(tmp_path)
    ids = torch.randint(0, 300, (2, 17))
    with torch.no_grad():
        assert torch.allclose(model(ids), hf(input_ids=ids).logits, atol=1e-4)


def test_sharded_roundtrip_and_dtypes(tmp_path):
    model = tiny()
    save_model(model, tmp_path, max_shard_bytes=40_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert set(index["weight_map"]) == set(model.state_dict())
    ids = torch.randint(0, 300, (1, 9))
    again = load_model(tmp_path)
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))
    for dtype in (torch.bfloat16, torch.float16):
        low = load_model(tmp_path, dtype=dtype)
        assert next(low.parameters()).dtype == dtype
        with torch.no_grad():
            assert torch.allclose(low(ids).float(), model(ids), atol=0.1)


def test_bad_folders(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")
    save_model(tiny(), tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(tmp_path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(CheckpointError, match="not supported"):
        load_config(tmp_path)


def test_missing_tensor_named(tmp_path):
    from safetensors.torch import load_file, save_file
    save_model(tiny(), tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="model.layers.1.mlp.up_proj.weight"):
        load_model(tmp_path)


def test_transformers_v5_config_spelling(tmp_path):
    save_model(tiny(), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    theta = cfg.pop("rope_theta")
    cfg.pop("rope_scaling")
    cfg["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": theta}
    cfg["dtype"] = cfg.pop("torch_dtype")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = load_config(tmp_path)
    assert loaded.rope_type == "linear" and loaded.rope_theta == theta
