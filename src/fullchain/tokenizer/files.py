"""Reading and writing the tokenizer side files of an HF model folder.

`tokenizer_config.json` (special tokens, `added_tokens_decoder`, `chat_template`,
`model_max_length`), `special_tokens_map.json` (legacy) and `chat_template.jinja`. The precedence
follows transformers 5: `chat_template.jinja` overrides the config field, and
`special_tokens_map.json` only fills what `tokenizer_config.json` leaves unset.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fullchain.config import TokenizerError

SPECIAL_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")
# transformers' "no limit" value; written when the caller gives no model_max_length.
VERY_LARGE_INTEGER = int(1e30)


@dataclass(frozen=True)
class AddedToken:
    """One entry of `added_tokens_decoder`: a token matched whole in text, before the model."""

    id: int
    content: str
    special: bool = True
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = False
    single_word: bool = False

    def to_config(self) -> dict[str, Any]:
        """The `added_tokens_decoder` value (HF key order, id is the dict key)."""
        fields = asdict(self)
        fields.pop("id")
        return dict(sorted(fields.items()))


def read_json(path: Path) -> dict:
    """Parse a JSON object file; a broken file is a TokenizerError naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(
            f"{path} is not valid JSON ({exc}); restore it from the model's original files"
        ) from exc
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} must hold a JSON object; restore it from the original files")
    return data


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def token_text(value: Any) -> str | None:
    """A special-token value as stored by HF: a string, an AddedToken dict or null."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def read_special_tokens(config: dict, special_map: dict) -> dict[str, str | None]:
    """bos/eos/pad/unk token strings; tokenizer_config.json wins over special_tokens_map.json."""
    out = {}
    for name in SPECIAL_NAMES:
        value = token_text(config.get(name))
        out[name] = value if value is not None else token_text(special_map.get(name))
    return out


def read_named_tokens(config: dict) -> dict[str, str]:
    """`*_token` entries other than bos/eos/pad/unk (sep_token, mask_token, image_token...)."""
    found = {k: token_text(v) for k, v in config.items() if k.endswith("_token")}
    return {k: v for k, v in found.items() if v is not None and k not in SPECIAL_NAMES}


def read_extra_specials(config: dict, special_map: dict) -> list[str]:
    """`additional_special_tokens` (v4 name) or `extra_special_tokens` (v5 name) as strings."""
    found: list[str] = []
    for source in (config, special_map):
        for key in ("additional_special_tokens", "extra_special_tokens"):
            values = source.get(key) or []
            values = values.values() if isinstance(values, dict) else values
            found += [t for t in map(token_text, values) if t is not None and t not in found]
    return found


def read_added_tokens(config: dict, path: Path) -> list[AddedToken]:
    """`added_tokens_decoder` entries sorted by id."""
    decoder = config.get("added_tokens_decoder") or {}
    tokens = []
    try:
        for key, value in decoder.items():
            value = {"content": value} if isinstance(value, str) else dict(value)
            value.pop("__type", None)
            known = {k: value[k] for k in AddedToken.__dataclass_fields__ if k in value}
            tokens.append(AddedToken(id=int(key), **known))
    except (TypeError, ValueError, AttributeError) as exc:
        raise TokenizerError(
            f"{path}: added_tokens_decoder is malformed ({exc}); it must map ids to "
            '{"content": ..., "special": ...} objects'
        ) from exc
    return sorted(tokens, key=lambda t: t.id)


def read_chat_templates(folder: Path, config: dict) -> dict[str, str]:
    """Named chat templates; "default" is the one used unless another is asked for.

    Sources in rising priority: `chat_template` in tokenizer_config.json (a string, or a list of
    {"name", "template"}), `chat_template.jinja`, `additional_chat_templates/<name>.jinja`.
    """
    templates: dict[str, str] = {}
    field = config.get("chat_template")
    if isinstance(field, str):
        templates["default"] = field
    elif isinstance(field, list):
        for item in field:
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                templates[str(item.get("name", "default"))] = item["template"]
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        templates["default"] = jinja_file.read_text(encoding="utf-8")
    extra_dir = folder / "additional_chat_templates"
    if extra_dir.is_dir():
        for path in sorted(extra_dir.glob("*.jinja")):
            templates[path.stem] = path.read_text(encoding="utf-8")
    return templates


def config_chat_template(templates: dict[str, str]) -> str | list[dict] | None:
    """The `chat_template` value for tokenizer_config.json (a list when there are several)."""
    if not templates:
        return None
    if list(templates) == ["default"]:
        return templates["default"]
    return [{"name": name, "template": text} for name, text in templates.items()]
