"""The decode kernel: linear products of a few rows read at the memory bandwidth on the CPU.

`gemv.cpp` is compiled on first use for this CPU (`torch.utils.cpp_extension`, cached under
``~/.cache/torch_extensions``) and registers ``torch.ops.fullchain.gemv(weight, x)``; its fake
(shape) function below lets it run inside ``torch.compile``d decode too.
`use_decode_kernel(model)` swaps the model's linear layers for `DecodeLinear`: the same
parameters, inputs of a few rows through the kernel, everything else through ``F.linear``.
Where no C++ compiler is found the engine keeps ``F.linear`` and says so once.
"""

from __future__ import annotations

import hashlib
import logging
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)
_SOURCE = Path(__file__).with_name("gemv.cpp")
_FLAGS = ["-O3", "-march=native", "-fopenmp"]
_state: dict[str, bool] = {}
MAX_ROWS = 4  # from here on PyTorch's matrix products are as fast (measured, 2 threads)


def load() -> bool:
    """Compile (once per source, flags and CPU) and load the kernel; False if it cannot be."""
    if "ok" not in _state:
        from torch.utils import cpp_extension
        _ninja_on_path()
        key = f"{_SOURCE.read_text()}{_FLAGS}{platform.machine()}"
        key += torch.backends.cpu.get_cpu_capability()
        name = f"fullchain_gemv_{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        try:
            cpp_extension.load(name, [str(_SOURCE)], extra_cflags=_FLAGS,
                               extra_ldflags=["-fopenmp"], is_python_module=False)
            torch.library.register_fake("fullchain::gemv", _gemv_shape)
            _state["ok"] = True
        except Exception as e:  # no compiler, no ninja, a foreign CPU: keep F.linear
            log.warning("the decode kernel could not be built (%s: %s); decode steps use "
                        "F.linear", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            _state["ok"] = False
    return _state["ok"]


def _gemv_shape(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _ninja_on_path() -> None:
    """torch's extension builder runs `ninja` from PATH; the `ninja` wheel puts it beside the
    interpreter, which is not on PATH when a venv's python is run without activating it."""
    import os
    import shutil
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"


class DecodeLinear(nn.Linear):
    """`nn.Linear` whose inputs of up to `MAX_ROWS` rows (decode steps) go through
    ``fullchain::gemv``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() <= MAX_ROWS * self.in_features and self.bias is None:
            return torch.ops.fullchain.gemv.default(self.weight, x)
        return F.linear(x, self.weight, self.bias)


def use_decode_kernel(model: nn.Module) -> bool:
    """Swap the CPU model's fp32/bf16 linear layers for `DecodeLinear` (weights made row-major
    again if an engine without the kernel had re-laid them); returns whether the kernel is in
    use."""
    param = next(model.parameters())
    if param.device.type != "cpu" or param.dtype not in (torch.float32, torch.bfloat16):
        return False
    if not load():
        return False
    with torch.no_grad():
        for module in model.modules():
            if type(module) in (nn.Linear, DecodeLinear):
                module.weight.data = module.weight.data.contiguous()
                module.__class__ = DecodeLinear  # same parameters and state dict
    return True
