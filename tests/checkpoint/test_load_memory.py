"""Loading memory-maps the safetensors: peak RSS is about one copy of the weights, not two."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fullchain.model import ModelConfig, Transformer

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="reads the peak RSS from Linux's /proc")

# ~117M parameters, 467 MB in fp32: large enough that a second copy stands out from the
# interpreter's own noise, small enough to write and read in a few seconds
CFG = dict(vocab_size=16000, hidden_size=1024, num_hidden_layers=5, num_attention_heads=16,
           intermediate_size=4096)

# A fresh interpreter for each step, so the peak RSS belongs to that step alone.
WRITE = """
import json, sys, torch
from safetensors.torch import save_file
from fullchain.checkpoint import config_to_hf
from fullchain.model import ModelConfig, Transformer
cfg = ModelConfig(**json.loads(sys.argv[2]))
with torch.device("meta"):
    shapes = {k: v.shape for k, v in Transformer(cfg).state_dict().items()}
save_file({k: torch.full(s, 0.01) for k, s in shapes.items()}, sys.argv[1] + "/model.safetensors",
          metadata={"format": "pt"})
open(sys.argv[1] + "/config.json", "w").write(json.dumps(config_to_hf(cfg)))
"""

# The peak is VmHWM, this process's own high-water RSS. Not ru_maxrss: Linux carries that over
# from the parent through fork + exec, so under a large pytest process it starts high.
MEASURE = """
import json, sys
import torch
import fullchain.checkpoint
from fullchain.model import ModelConfig, Transformer
def peak():
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024  # kB
# load_model builds the model on the meta device, whose first use imports torch._dynamo
# (~80 MB of code): do it before the baseline, so the increase is the weights alone
with torch.device("meta"):
    Transformer(ModelConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1,
                            num_attention_heads=1, intermediate_size=8))
before = peak()
model = fullchain.checkpoint.load_model(sys.argv[1], dtype=sys.argv[2])
with torch.no_grad():  # read every weight, as inference would: mapped pages count once touched
    for p in model.parameters():
        p.sum()
print(json.dumps({"increase": peak() - before, "dtype": str(next(model.parameters()).dtype)}))
"""


def python(script: str, *args: str) -> str:
    run = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("large")
    python(WRITE, str(path), json.dumps(CFG))
    yield path
    shutil.rmtree(path)  # half a gigabyte: do not leave it to pytest's retention of old runs


def sizes(dtype: torch.dtype) -> tuple[int, int]:
    """(all weights, the largest tensor) in bytes at `dtype`."""
    with torch.device("meta"):
        numels = [p.numel() for p in Transformer(ModelConfig(**CFG)).parameters()]
    return sum(numels) * dtype.itemsize, max(numels) * dtype.itemsize


def increase(folder: Path, dtype: str) -> int:
    result = json.loads(python(MEASURE, str(folder), dtype))
    assert result["dtype"] == f"torch.{dtype}"
    return result["increase"]


@pytest.mark.slow
def test_float32_load_holds_one_copy(folder):
    weights, _ = sizes(torch.float32)
    grown = increase(folder, "float32")
    assert grown > 0.9 * weights  # the weights were read, so the measurement sees them
    assert grown < 1.5 * weights, f"{grown / weights:.2f} copies of the weights"


@pytest.mark.slow
def test_bfloat16_load_holds_one_copy_plus_one_source_tensor(folder):
    weights, _ = sizes(torch.bfloat16)
    _, largest_source = sizes(torch.float32)
    grown = increase(folder, "bfloat16")
    assert grown > 0.9 * weights
    # Each fp32 tensor is read from the mapped file and converted to a new bf16 tensor, so the
    # peak is all bf16 weights plus the fp32 tensor being converted. Were the file's fp32 pages
    # kept until the end, the peak would be bf16 + all fp32 (3x the bf16 weights).
    assert grown < 1.25 * weights + largest_source, f"{grown / weights:.2f}x the bf16 weights"
