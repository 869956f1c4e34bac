"""`fullchain serve` and `fullchain chat` as commands (subprocesses)."""

import os
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from serve_helpers import client, free_port

from fullchain.engine import Engine, SamplingParams


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


def test_chat_command_uses_the_engine(model_dir, tok):
    messages = [{"role": "user", "content": "the quick brown fox"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    want = Engine.from_pretrained(model_dir).generate([ids], SamplingParams(max_tokens=10))[0]
    run = subprocess.run([sys.executable, "-m", "fullchain", "chat", str(model_dir),
                          "--max-new-tokens", "10"], input="the quick brown fox\n/exit\n",
                         env=env(), capture_output=True, encoding="utf-8", timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"you> model> {want.outputs[0].text}\nyou> "
