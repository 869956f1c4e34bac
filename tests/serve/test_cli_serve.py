"""`fullchain serve` and `fullchain chat` as commands (subprocesses)."""

import os
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from serve_helpers import client, free_port

from fullchain.engine import Engine, EngineConfig, SamplingParams


def env() -> dict:
    return {**os.environ, "PYTHONIOENCODING": "utf-8",
            "OMP_NUM_THREADS": str(torch.get_num_threads())}


@pytest.mark.slow
def test_serve_command_answers_and_stops(model_dir):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fullchain", "serve", model_dir, "--port",
                             str(port), "--api-key", "k"], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not answer /health within ~30 s")
        r = client(url, api_key="k").chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        assert r.usage.completion_tokens >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_chat_command_uses_the_engine(model_dir, tok, quantize):
    messages = [{"role": "user", "content": "the quick brown fox"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    engine = Engine.from_pretrained(model_dir, EngineConfig(quantization=quantize))
    want = engine.generate([ids], SamplingParams(max_tokens=10))[0]
    flags = ["--quantize", quantize] if quantize else []
    run = subprocess.run([sys.executable, "-m", "fullchain", "chat", str(model_dir),
                          "--max-new-tokens", "10", *flags], input="the quick brown fox\n/exit\n",
                         env=env(), capture_output=True, encoding="utf-8", timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"you> model> {want.outputs[0].text}\nyou> "


@pytest.mark.parametrize("command", ["serve", "chat"])
def test_engine_flags_reach_the_engine_config(command):
    from fullchain.cli import build_parser
    from fullchain.commands import engine_config
    args = build_parser().parse_args([command, "some/model", "--quantize", "int8",
                                      "--kv-cache-dtype", "bfloat16", "--max-num-seqs", "8"])
    config = engine_config(args)
    assert (config.quantization, config.kv_cache_dtype, config.max_num_seqs) == (
        "int8", "bfloat16", 8)
    assert engine_config(build_parser().parse_args([command, "m"])).quantization is None
