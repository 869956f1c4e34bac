"""Builtin chat templates for tokenizers that ship none.

Each template handles a system message, multi-turn chat, tool schemas, assistant tool calls in
the history, tool results and `add_generation_prompt`, and is prefix-stable (so the assistant
loss mask can be computed by rendering prefixes):

- "chatml": `<|im_start|>role ... <|im_end|>`, tools in the Qwen2.5/Hermes style (`<tools>` in
  the system turn, `<tool_call>` JSON blocks, `<tool_response>` in a user turn).
- "internlm2": `{{ bos_token }}` + ChatML with InternLM2's `<|plugin|>` protocol
  (`system name=<|plugin|>`, `<|action_start|><|plugin|>` calls with "parameters",
  `environment name=<|plugin|>` results).
- "llama3": Llama 3.1 headers and `<|eot_id|>`, JSON tool calls with "parameters", `ipython`
  results; the date is fixed to "26 Jul 2024" unless `date_string` is passed.

The sources are the `.jinja` files next to this module.
"""

from __future__ import annotations

from pathlib import Path

from fullchain.config import TokenizerError

_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAMES = ("chatml", "internlm2", "llama3")

BUILTIN_TEMPLATES: dict[str, str] = {
    name: (_DIR / f"{name}.jinja").read_text(encoding="utf-8") for name in TEMPLATE_NAMES
}


def get_builtin_template(name: str) -> str:
    """The Jinja source of builtin template `name` (one of BUILTIN_TEMPLATES)."""
    try:
        return BUILTIN_TEMPLATES[name]
    except KeyError:
        raise TokenizerError(
            f"unknown builtin chat template {name!r}; choose one of {sorted(BUILTIN_TEMPLATES)}"
        ) from None
