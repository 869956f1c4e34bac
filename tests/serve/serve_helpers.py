"""Helpers of the server tests: scripted model, in-thread server, client."""

import socket
import threading
import time
from contextlib import contextmanager

import torch
from torch import nn

from fullchain.checkpoint import save_model
from fullchain.engine import Engine, EngineConfig
from fullchain.engine.async_engine import AsyncEngine
from fullchain.model import ModelConfig, Transformer
from fullchain.tokenizer import get_builtin_template, train_bpe

TEXTS = [f"the quick brown fox number {i} jumps over the lazy dog and runs home to {i * 7}"
         for i in range(60)] + ['{"name": "get_weather", "arguments": {"city": "Paris"}}'] * 5
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>",
            "<|action_start|>", "<|action_end|>", "<|plugin|>"]


def tiny_tokenizer():
    """A 320-token BPE over TEXTS with the ChatML template and the tool-call specials."""
    t = train_bpe(TEXTS, vocab_size=320, special_tokens=SPECIALS, eos_token="<|endoftext|>")
    t.chat_template = get_builtin_template("chatml")
    return t


def save_tiny_model(tok, folder):
    """A 2-layer random model with sharp logits (greedy replies vary instead of looping),
    saved with `tok` as an HF folder; returns the folder."""
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                      max_position_embeddings=512, eos_token_id=tok.eos_token_id)
    model = Transformer(cfg)
    model.init_weights(seed=3)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    save_model(model, folder)
    tok.save(folder)
    return folder


def engine_config(**kw) -> EngineConfig:
    return EngineConfig(**{"num_blocks": 512, "block_size": 8, "max_num_batched_tokens": 256,
                           **kw})


class ScriptedModel(nn.Module):
    """Says `script` (token ids) right after a prompt of `prompt_len` tokens, whatever the prompt
    (logits depend on the position only); it still writes and reads the paged KV cache.
    `fail_at`: raise when asked to compute that position (a mid-stream engine failure)."""

    def __init__(self, vocab_size: int, script: list[int], prompt_len: int, *,
                 fail_at: int | None = None) -> None:
        super().__init__()
        self.config = ModelConfig(vocab_size=vocab_size, hidden_size=8, num_hidden_layers=1,
                                  num_attention_heads=1, intermediate_size=8,
                                  max_position_embeddings=2048)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.lm_head = nn.Identity()
        table = torch.zeros(2048, vocab_size)
        for i, t in enumerate(script):
            table[prompt_len - 1 + i, t] = 50.0
        self.register_buffer("table", table)
        self.fail_at = fail_at

    def forward(self, input_ids, *, positions, attention, return_hidden=False):
        if self.fail_at is not None and int(positions.max()) >= self.fail_at:
            raise RuntimeError("scripted failure")
        q = torch.zeros(1, 1, input_ids.shape[1], 8)
        attention(0, q, q.clone(), q.clone())
        return self.table[positions]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(engine: Engine, tokenizer, *, max_queued: int = 256, **kw):
    """Serve `engine` on a free loopback port in a thread; yields (base_url, AsyncEngine)."""
    import uvicorn

    from fullchain.serve import create_app
    async_engine = AsyncEngine(engine, max_queued=max_queued)
    app = create_app(async_engine, tokenizer, model_name="tiny", **kw)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.025)
    assert server.started, "the test server did not start"
    try:
        yield f"http://127.0.0.1:{port}", async_engine
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def client(url: str, **kw):
    import openai
    return openai.OpenAI(base_url=f"{url}/v1", api_key=kw.pop("api_key", "none"),
                         max_retries=0, timeout=60, **kw)
