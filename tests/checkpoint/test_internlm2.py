"""InternLM2: a state dict in the documented layout (packed wqkv, renamed keys) loads into fullchain
and gives the logits of an independent reference written here from the layout description."""

import json
import math

import torch
from safetensors.torch import save_file

from fullchain.checkpoint import load_model

N_HEADS, N_KV, D, H, I, V, L = 4, 2, 8, 32, 48, 97, 2  # noqa: E741
THETA, EPS = 10000.0, 1e-5


def internlm2_state_dict(gen: torch.Generator) -> dict[str, torch.Tensor]:
    def r(*shape):
        return torch.randn(*shape, generator=gen) * 0.2
    sd = {"model.tok_embeddings.weight": r(V, H), "output.weight": r(V, H),
          "model.norm.weight": 1 + r(H)}
    for i in range(L):
        p = f"model.layers.{i}."
        sd[p + "attention.wqkv.weight"] = r((N_HEADS + 2 * N_KV) * D, H)
        sd[p + "attention.wo.weight"] = r(H, N_HEADS * D)
        sd[p + "feed_forward.w1.weight"] = r(I, H)
        sd[p + "feed_forward.w3.weight"] = r(I, H)
        sd[p + "feed_forward.w2.weight"] = r(H, I)
        sd[p + "attention_norm.weight"] = 1 + r(H)
        sd[p + "ffn_norm.weight"] = 1 + r(H)
    return sd


def reference_logits(sd, ids):
    """Straight from the layout: per KV group g, rows [q_gG..q_gG+G-1, k_g, v_g]."""
    def norm(x, w):
        return w * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + EPS))

    def rope(x, pos):  # x [T, D], rotate-half layout
        freqs = [THETA ** (-2 * j / D) for j in range(D // 2)]
        out = x.clone()
        for t in range(x.shape[0]):
            for j, f in enumerate(freqs):
                c, s = math.cos(pos[t] * f), math.sin(pos[t] * f)
                a, b = x[t, j].item(), x[t, j + D // 2].item()
                out[t, j], out[t, j + D // 2] = a * c - b * s, b * c + a * s
        return out

    T, G = ids.shape[0], N_HEADS // N_KV
    x = sd["model.tok_embeddings.weight"][ids]
    for i in range(L):
        p = f"model.layers.{i}."
        h = norm(x, sd[p + "attention_norm.weight"])
        qkv = h @ sd[p + "attention.wqkv.weight"].T  # [T, (n+2kv)*D]
        heads = []
        for g in range(N_KV):
            block = qkv[:, g * (G + 2) * D:(g + 1) * (G + 2) * D]
            k = rope(block[:, G * D:(G + 1) * D], list(range(T)))
            v = block[:, (G + 1) * D:]
            for j in range(G):
                q = rope(block[:, j * D:(j + 1) * D], list(range(T)))
                scores = q @ k.T / math.sqrt(D)
                scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
                heads.append((g * G + j, scores.softmax(-1) @ v))
        attn = torch.cat([o for _, o in sorted(heads, key=lambda t: t[0])], dim=-1)
        x = x + attn @ sd[p + "attention.wo.weight"].T
        h = norm(x, sd[p + "ffn_norm.weight"])
        gate = h @ sd[p + "feed_forward.w1.weight"].T
        up = h @ sd[p + "feed_forward.w3.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ sd[p + "feed_forward.w2.weight"].T
    return norm(x, sd["model.norm.weight"]) @ sd["output.weight"].T


def test_internlm2_folder_matches_reference(tmp_path):
    gen = torch.Generator().manual_seed(0)
    sd = internlm2_state_dict(gen)
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config = {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2",
              "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config"},
              "vocab_size": V, "hidden_size": H, "intermediate_size": I, "num_hidden_layers": L,
              "num_attention_heads": N_HEADS, "num_key_value_heads": N_KV, "bias": False,
              "rms_norm_eps": EPS, "rope_theta": THETA, "rope_scaling": None,
              "max_position_embeddings": 64, "tie_word_embeddings": False, "hidden_act": "silu",
              "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
              "attn_implementation": "eager", "torch_dtype": "float32"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = load_model(tmp_path)
    assert model.config.architecture == "LlamaForCausalLM"
    ids = torch.randint(0, V, (7,), generator=gen)
    with torch.no_grad():
        ours = model(ids[None])[0]
    assert (ours - reference_logits(sd, ids)).abs().max().item() <= 1e-4
