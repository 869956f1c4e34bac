"""`fullchain demo --quick` end to end: every stage runs and the tiny model learns."""

import json

import pytest
import torch

# measured: validation loss 3.20 after the quick run's 120 steps, on held-out world documents;
# while real text from the machine could land in the validation split (chosen by ids that held
# pytest's tmp path) it ranged 3.1-5.0 between runs; a fresh model starts near ln(2048) = 7.6
QUICK_VAL_LOSS_BOUND = 3.5


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    from fullchain.demo import main
    out = tmp_path / "demo"
    assert main(out=out, quick=True) == 0

    results = json.loads((out / "results.json").read_text())
    assert list(results["stages"]) == ["world", "data", "tokenizer", "tokenize", "pretrain",
                                       "long_context", "sample", "serve", "quantize", "gguf"]
    data = results["stages"]["data"]
    assert data["documents_out"] > 0 and data["num_clusters"] > 0
    assert data["funnel"][-1]["step"] == "fuzzy_dedup"
    pre = results["stages"]["pretrain"]
    assert pre["val_loss"] < QUICK_VAL_LOSS_BOUND
    assert pre["final_loss"] < pre["first_loss"] - 3
    assert (out / "pretrain" / "loss.png").stat().st_size > 10_000
    long = results["stages"]["long_context"]
    # the extended model is better at 4x the trained length than the model it started from
    assert long["long_seq_len"] == 4 * long["base_seq_len"]
    assert long["val_loss_at_long"]["model_long"] < long["val_loss_at_long"]["model"]
    assert json.loads((out / "model_long" / "config.json").read_text())["rope_theta"] == 50000.0
    report = (out / "report.md").read_text()
    assert "pretrain/loss.png" in report and f"{pre['val_loss']:.3f}" in report
    serve = results["stages"]["serve"]
    assert serve["chats"] == 3 and all(t["tokens"] > 0 for t in serve["transcript"])
    assert serve["completion_tokens"] == sum(t["tokens"] for t in serve["transcript"])
    assert serve["tokens_per_s"] > 0
    assert serve["transcript"][0]["assistant"].strip() in report
    quant = results["stages"]["quantize"]
    full, int8 = quant["float32"], quant["int8"]
    assert int8["weight_mb"] < 0.3 * full["weight_mb"]  # a quarter, and the scales and norms
    # int8 weights cost little of what the model learned (measured: +3e-4 on the full demo)
    assert abs(int8["val_loss"] - full["val_loss"]) < 0.02
    assert f"| int8 | {int8['weight_mb']:.1f} |" in report
    # llama.cpp runs the exported model: the engine's loss from its own logits, our token ids
    gg = results["stages"]["gguf"]
    assert abs(gg["f32"]["llama_cpp_val_loss"] - full["val_loss"]) < 1e-3
    assert abs(gg["q8_0"]["llama_cpp_val_loss"] - full["val_loss"]) < 0.02
    assert gg["f32"]["same_tokens"] == gg["q8_0"]["same_tokens"] == gg["texts"] > 0
    assert gg["q8_0"]["mb"] < 0.4 * gg["f32"]["mb"]
    assert f"| q8_0 | {gg['q8_0']['mb']:.1f} |" in report

    # the model folder is an HF folder with its lineage
    meta = json.loads((out / "model" / "meta.json").read_text())
    assert meta["lineage"]["stage"] == "pretrain"
    assert all(len(i["sha256"]) == 64 for i in meta["lineage"]["inputs"])
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out / "model")
    tok = transformers.AutoTokenizer.from_pretrained(out / "model")
    from fullchain.checkpoint.pretrained import load_pretrained
    model, ours = load_pretrained(out / "model")
    ids = ours.encode("Q: Where was")
    assert tok("Q: Where was")["input_ids"] == ids
    with torch.no_grad():
        assert torch.allclose(model(torch.tensor([ids])), hf(torch.tensor([ids])).logits,
                              atol=1e-4)
