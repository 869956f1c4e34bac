"""The decoder: RMSNorm, RoPE, grouped-query attention, SwiGLU, with HF's Llama module names,
so `state_dict()` is an HF state dict and a LoRA adapter on it is a PEFT adapter.

Shapes: B batch, T new tokens, H query heads, KV key/value heads, D head_dim, C hidden size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fullchain.model.attention import Attention, causal
from fullchain.model.config import ModelConfig
from fullchain.model.linear import Linear
from fullchain.model.rope import RotaryEmbedding, apply_rotary


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 statistics, then cast back before the weight, exactly as HF does
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)
        qkv_bias = cfg.attention_bias or cfg.qkv_bias
        c, d = cfg.hidden_size, cfg.head_dim
        self.q_proj = Linear(c, self.num_heads * d, bias=qkv_bias)
        self.k_proj = Linear(c, self.num_kv_heads * d, bias=qkv_bias)
        self.v_proj = Linear(c, self.num_kv_heads * d, bias=qkv_bias)
        self.o_proj = Linear(self.num_heads * d, c, bias=cfg.attention_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attention: Attention, layer_idx: int) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = attention(layer_idx, q, k, v)  # [B, H, T, D]
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, i, bias = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.gate_proj = Linear(c, i, bias=bias)
        self.up_proj = Linear(c, i, bias=bias)
        self.down_proj = Linear(i, c, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.self_attn = SelfAttention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attention: Attention) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attention, self.layer_idx)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """HF's `LlamaModel`: embeddings, layers, final norm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                attention: Attention) -> torch.Tensor:
        x = self.embed_tokens(input_ids)  # [B, T, C]
        cos, sin = self.rotary_emb(positions, x.dtype)  # [B, T, D]
        for layer in self.layers:
            x = layer(x, cos, sin, attention)
        return self.norm(x)


class Transformer(nn.Module):
    """HF's `LlamaForCausalLM`: `model` (the backbone) and `lm_head`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, *, positions: torch.Tensor | None = None,
                attention: Attention = causal, return_hidden: bool = False) -> torch.Tensor:
        """input_ids [B, T] -> logits [B, T, vocab] (or the final hidden states [B, T, C]).

        `positions` [B, T] defaults to 0..T-1; for packed documents pass positions that restart
        per document together with a `DocumentAttention`; with a KV cache pass absolute positions.
        """
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            positions = positions.expand(input_ids.shape[0], -1)
        window = self.config.sliding_window
        if window is not None and int(positions.max()) >= window:
            raise NotImplementedError(f"sliding-window attention beyond {window} tokens is not "
                                      "implemented; keep sequences within the window")
        hidden = self.model(input_ids, positions, attention)
        return hidden if return_hidden else self.lm_head(hidden)

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, initializer_range) matrices, zero biases, unit norms (HF's init)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                w = torch.empty(module.weight.shape, dtype=torch.float32)
                module.weight.copy_(w.normal_(0.0, std, generator=gen))
                if isinstance(module, nn.Linear) and module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
