"""The tokenizer interface: one class over the `tokenizers` and `sentencepiece` backends."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fullchain.config import TokenizerError
from fullchain.tokenizer import chat
from fullchain.tokenizer.files import (
    SPECIAL_NAMES,
    VERY_LARGE_INTEGER,
    AddedToken,
    config_chat_template,
    read_added_tokens,
    read_chat_templates,
    read_extra_specials,
    read_json,
    read_named_tokens,
    read_special_tokens,
    write_json,
)
from fullchain.tokenizer.hf_backend import HFBackend
from fullchain.tokenizer.sp_backend import SentencePieceBackend
from fullchain.tokenizer.stream import StreamDecoder

# End-of-turn tokens of the families we serve; generation stops on any that the vocab has.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|action_end|>", "<|endoftext|>")


class Tokenizer:
    """Text <-> ids, special tokens and chat rendering for one model.

    Build it with `Tokenizer.from_dir(model_folder)` or `train_bpe(...)`; `save(folder)` writes
    files that `transformers.AutoTokenizer.from_pretrained(folder)` loads with identical ids.
    Special-token attributes are fixed at construction (the backend resolves their ids then).
    """

    def __init__(
        self,
        backend: HFBackend | SentencePieceBackend,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
        chat_template: str | Mapping[str, str] | None = None,
        model_max_length: int | None = None,
        named_tokens: Mapping[str, str] | None = None,
    ):
        self._backend = backend
        self._specials = {"bos_token": bos_token, "eos_token": eos_token,
                          "pad_token": pad_token, "unk_token": unk_token}
        if isinstance(chat_template, Mapping):
            self._templates = dict(chat_template)
        else:
            self._templates = {"default": chat_template} if chat_template else {}
        self.model_max_length = model_max_length
        # Other `*_token` entries of tokenizer_config.json (sep, cls, mask, model-specific ones):
        # transformers hands them to the chat template too, so we keep and re-save them.
        self._named_tokens = dict(named_tokens or {})
        self._hash: str | None = None

    # ----------------------------------------------------------------- files

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> Tokenizer:
        """Load an HF model folder: `tokenizer.json` if present, else `tokenizer.model`, plus
        tokenizer_config.json, special_tokens_map.json and chat_template.jinja when present.
        A missing folder or tokenizer file, or an unreadable one, is a TokenizerError."""
        folder = Path(path)
        if not folder.is_dir():
            raise TokenizerError(
                f"tokenizer folder {folder} does not exist; pass the model folder that holds "
                "tokenizer.json or tokenizer.model"
            )
        config_path = folder / "tokenizer_config.json"
        config = read_json(config_path) if config_path.is_file() else {}
        map_path = folder / "special_tokens_map.json"
        special_map = read_json(map_path) if map_path.is_file() else {}
        specials = read_special_tokens(config, special_map)
        backend = _load_backend(folder, config, specials, special_map)
        return cls(backend, **specials, chat_template=read_chat_templates(folder, config),
                   model_max_length=config.get("model_max_length"),
                   named_tokens=read_named_tokens(config))

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer file, tokenizer_config.json, special_tokens_map.json and the chat
        template (both as chat_template.jinja and in the config, for older readers)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        shadowing = folder / "tokenizer.json"
        if self._backend.filename != shadowing.name and shadowing.exists():
            shadowing.unlink()  # readers prefer tokenizer.json: a stale one would hide ours
        self._backend.save(folder)
        added = self.added_tokens()
        config = {
            "tokenizer_class": self._backend.tokenizer_class,
            **self._specials,
            **self._named_tokens,
            "added_tokens_decoder": {str(t.id): t.to_config() for t in added},
            "clean_up_tokenization_spaces": False,
            "model_max_length": self.model_max_length or VERY_LARGE_INTEGER,
            **self._backend.config_fields(),
        }
        template = config_chat_template(self._templates)
        if template is not None:
            config["chat_template"] = template
        write_json(folder / "tokenizer_config.json", config)
        named = {k: v for k, v in self._specials.items() if v is not None}
        extra = [t.content for t in added if t.special and t.content not in named.values()]
        special_map = {**named, "additional_special_tokens": extra}
        write_json(folder / "special_tokens_map.json", special_map)
        self._save_templates(folder)

    def _save_templates(self, folder: Path) -> None:
        # A stale chat_template.jinja would override the config on the next load: remove it.
        jinja_file = folder / "chat_template.jinja"
        if "default" in self._templates:
            jinja_file.write_text(self._templates["default"], encoding="utf-8")
        elif jinja_file.exists():
            jinja_file.unlink()
        others = {k: v for k, v in self._templates.items() if k != "default"}
        if others:
            (folder / "additional_chat_templates").mkdir(exist_ok=True)
            for name, text in others.items():
                (folder / "additional_chat_templates" / f"{name}.jinja").write_text(text, "utf-8")

    # ----------------------------------------------------------------- ids

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; special-token strings in it become their ids. With
        `add_special_tokens`, BOS (and EOS where the tokenizer's HF config says so) is added."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        return self._backend.encode(text, add_special_tokens)

    def encode_batch(self, texts: Sequence[str], *,
                     add_special_tokens: bool = False) -> list[list[int]]:
        """`encode` of each text, in order; the tokenizers backend encodes the batch on all
        cores (its Rust thread pool)."""
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"encode_batch takes strs, got {type(text).__name__}")
        return self._backend.encode_batch(list(texts), add_special_tokens)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Text of `ids`; special tokens are written out unless `skip_special_tokens`."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self._backend.id_to_token(int(i))

    def added_tokens(self) -> list[AddedToken]:
        """The tokens matched whole in text before the model (`added_tokens_decoder`), by id."""
        return self._backend.added_tokens()

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (`len(tokenizer)` in transformers)."""
        return self._backend.vocab_size

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def backend_kind(self) -> str:
        """The tokenizer file this tokenizer reads and writes: "tokenizer.json" or
        "tokenizer.model"."""
        return self._backend.filename

    # ----------------------------------------------------------- special tokens

    bos_token = property(lambda self: self._specials["bos_token"])
    eos_token = property(lambda self: self._specials["eos_token"])
    pad_token = property(lambda self: self._specials["pad_token"])
    unk_token = property(lambda self: self._specials["unk_token"])

    def _special_id(self, name: str) -> int | None:
        token = self._specials[name]
        return None if token is None else self.token_to_id(token)

    bos_token_id = property(lambda self: self._special_id("bos_token"))
    eos_token_id = property(lambda self: self._special_id("eos_token"))
    pad_token_id = property(lambda self: self._special_id("pad_token"))
    unk_token_id = property(lambda self: self._special_id("unk_token"))

    @property
    def stop_token_ids(self) -> list[int]:
        """EOS, then the family end-of-turn tokens present in the vocabulary, without repeats."""
        ids = [self.eos_token_id] + [self.token_to_id(t) for t in END_OF_TURN_TOKENS]
        return list(dict.fromkeys(i for i in ids if i is not None))

    def content_hash(self) -> str:
        """sha256 hex of what gives ids their meaning: vocabulary, merges (or sentencepiece
        pieces and scores), added tokens and the bos/eos/pad/unk roles. Independent of file
        bytes, JSON layout and chat template, so re-saving keeps it; token shards record it."""
        if self._hash is None:  # the vocabulary never changes after construction
            payload = {"backend": self._backend.fingerprint(), "special": self._specials}
            blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            self._hash = hashlib.sha256(blob.encode("utf-8")).hexdigest()
        return self._hash

    # ----------------------------------------------------------------- chat

    @property
    def chat_template(self) -> str | None:
        """The default chat template (Jinja source), or None."""
        return self._templates.get("default")

    @chat_template.setter
    def chat_template(self, source: str | None) -> None:
        if source is None:
            self._templates.pop("default", None)
        else:
            self._templates["default"] = source

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = False,
        tokenize: bool = False,
        **kwargs: Any,
    ) -> str | list[int]:
        """Render `messages` (OpenAI-style dicts) with the chat template, byte for byte as
        transformers does; extra `kwargs` become template variables. With `tokenize`, return
        the ids of the rendering encoded without added BOS/EOS (the template writes its own BOS,
        so none is doubled)."""
        source = self._template_for(tools)
        text = chat.render(source, self._messages(messages), tools=_tool_list(tools),
                           add_generation_prompt=add_generation_prompt,
                           variables=self._variables(kwargs))
        return self.encode(text) if tokenize else text

    def render_conversation(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> tuple[list[int], list[int]]:
        """Ids of the rendered conversation and a loss mask of the same length: 1 on the tokens
        of each assistant reply and its end-of-turn token, 0 on everything else (role headers,
        other turns, the newline after end-of-turn). `ids == apply_chat_template(messages,
        tokenize=True)`. TokenizerError if the template is not prefix-stable."""
        source = self._template_for(tools)
        msgs, tool_list = self._messages(messages), _tool_list(tools)
        variables = self._variables(kwargs)

        def render_prefix(prefix: list[dict], add_generation_prompt: bool) -> str:
            return chat.render(source, prefix, tools=tool_list,
                               add_generation_prompt=add_generation_prompt, variables=variables)

        text = render_prefix(msgs, False)
        stop_texts = [self.id_to_token(i) or "" for i in self.stop_token_ids]
        spans = chat.assistant_spans(render_prefix, msgs, text, stop_texts)
        ids, offsets = self._backend.encode_with_offsets(text)
        return ids, chat.mask_from_spans(offsets, spans)

    def stream_decoder(self, *, skip_special_tokens: bool = False) -> StreamDecoder:
        """A fresh incremental decoder for one generated sequence."""
        return StreamDecoder(lambda ids: self.decode(ids, skip_special_tokens=skip_special_tokens))

    def _template_for(self, tools) -> str:
        if tools is not None and "tool_use" in self._templates:
            return self._templates["tool_use"]
        if "default" in self._templates:
            return self._templates["default"]
        if self._templates:
            return next(iter(self._templates.values()))
        raise TokenizerError(
            "this tokenizer has no chat template; add chat_template.jinja to the model folder or "
            "set tokenizer.chat_template = get_builtin_template('chatml') "
            "(or 'internlm2', 'llama3')"
        )

    def _messages(self, messages) -> list[dict]:
        msgs = chat.normalize_messages(messages)
        if not msgs:
            raise TokenizerError("cannot render an empty conversation; pass at least one message")
        return msgs

    def _variables(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        # Unset special tokens stay undefined in the template (transformers passes only set ones).
        named = {k: v for k, v in self._specials.items() if v is not None}
        return {**self._named_tokens, **named, **kwargs}

    def __repr__(self) -> str:
        return (f"Tokenizer({self.backend_kind}, vocab_size={self.vocab_size}, "
                f"bos={self.bos_token!r}, eos={self.eos_token!r})")


def _tool_list(tools) -> list[dict] | None:
    if tools is None:
        return None
    tools = list(tools)
    if not all(isinstance(t, Mapping) for t in tools):
        raise TokenizerError(
            "tools must be JSON-schema dicts: {'type': 'function', 'function': {...}}"
        )
    return [dict(t) for t in tools]


def _load_backend(folder: Path, config: dict, specials: dict, special_map: dict):
    added = read_added_tokens(config, folder / "tokenizer_config.json")
    names = [specials[n] for n in SPECIAL_NAMES if specials[n]]
    names += read_extra_specials(config, special_map) + list(read_named_tokens(config).values())
    if (folder / "tokenizer.json").is_file():
        return HFBackend.load(folder / "tokenizer.json", added, names)
    if (folder / "tokenizer.model").is_file():
        return SentencePieceBackend.load(
            folder / "tokenizer.model", added=added, specials=names,
            add_bos=bool(config.get("add_bos_token", True)),
            add_eos=bool(config.get("add_eos_token", False)),
            legacy=bool(config.get("legacy", False)),
            bos_token=specials["bos_token"], eos_token=specials["eos_token"],
        )
    raise TokenizerError(
        f"{folder} has no tokenizer.json or tokenizer.model; copy the model's tokenizer files "
        "into it (or train one with `train_bpe` and `save` it there)"
    )
