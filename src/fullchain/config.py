"""Typed stage configs: keyword-only dataclasses filled from defaults, YAML and dotted overrides.

A config is a ``@dataclass(kw_only=True)``; a field typed as another dataclass is a section (a
nested YAML mapping, a dotted CLI key). ``__post_init__`` validates and raises ConfigError naming
the key and the fix (``require`` helps). Derived values belong in ``field(init=False)`` fields:
recomputed on every load, never set or dumped. YAML is read with ``yaml.safe_load``; nothing in
a config is ever executed or imported. The package's user-facing errors live here too, at the
bottom of the core, so that every part can raise them.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import types
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

__all__ = ["CheckpointError", "ConfigError", "DataError", "FullchainError", "LLMError",
           "TokenizerError", "config_to_dict", "dump_config", "load_config", "require",
           "split_cli_overrides"]


# User-facing errors, shared by the whole package: the CLI prints them as one line and exits
# non-zero, with no traceback.

class FullchainError(Exception):
    """A problem the user can fix (bad file, key or value); the message names it and the fix."""


class ConfigError(FullchainError):
    """An unknown config key or a value of the wrong type or range."""


class CheckpointError(FullchainError):
    """A model folder that is missing, truncated or inconsistent."""


class TokenizerError(FullchainError):
    """A tokenizer folder that cannot be loaded or does not match its model."""


class DataError(FullchainError):
    """A data file (documents, token shards, chat JSONL) that is malformed or incompatible."""


class LLMError(FullchainError):
    """A model endpoint or engine that failed or answered something unusable: the message names
    the URL (or model folder), the HTTP status and the server's own message. `status` is the
    HTTP status, or None when there was no HTTP answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


C = TypeVar("C")
_NONE = type(None)
_UNIONS = (Union, types.UnionType)
_SEQUENCES = (list, tuple, Sequence)
_SCALARS = (int, float, bool, str, Path, PurePath)
_TRUE, _FALSE = frozenset({"true", "yes", "on", "1"}), frozenset({"false", "no", "off", "0"})


@dataclasses.dataclass(frozen=True)
class _Origin:  # where values come from: `src` ends error messages; `cli` marks raw CLI text
    src: str
    cli: bool = False


def load_config(
    cls: type[C],
    *,
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    data: Mapping[str, Any] | None = None,
) -> C:
    """Build ``cls`` from its defaults, then the YAML file at ``path``, then ``data``, then
    ``overrides`` (later wins; sections merge key by key, other values are replaced whole).

    ``overrides`` items are ``--a.b VALUE``, ``--a.b=VALUE`` or ``a.b=VALUE``, one value each.
    Values are checked and coerced against the field annotations. Raises ConfigError for a
    missing or malformed file, an unknown key (listing the allowed keys, with a suggestion), a
    wrong type, a missing required key, or a failed ``__post_init__`` check.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    updates: dict[str, Any] = {}
    if path is not None:
        _assign_mapping(cls, updates, _read_yaml(Path(path)), _Origin(f"in {path}"), "")
    if data is not None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"config data must be a mapping of keys, got {type(data).__name__}")
        _assign_mapping(cls, updates, data, _Origin("in data"), "")
    cli = _Origin("on the command line", cli=True)
    for key, value in _parse_overrides(overrides):
        _assign(cls, updates, key.split("."), value, origin=cli, prefix="")
    return _build(cls, updates, "", None)


def require(ok: bool, key: str, problem: str) -> None:
    """Unless ``ok``, raise ConfigError ``config key '<key>' <problem>``; for ``__post_init__``.

    ``key`` is relative to the dataclass being checked: load_config prefixes its section, so
    ``'lr'`` checked in section ``train`` is reported as ``'train.lr'``. Say the fix in
    ``problem``: ``require(self.lr > 0, "lr", f"must be > 0, got {self.lr}; try 3e-4")``.
    """
    if not ok:
        err = ConfigError(f"config key '{key}' {problem}")
        err.config_key, err.config_problem = key, problem  # read by load_config to add the section
        raise err


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """``cfg`` as plain YAML-ready data (sections → dicts, Paths → str, tuples → lists).

    Only init fields are kept, so ``load_config(type(cfg), data=config_to_dict(cfg)) == cfg``.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"config_to_dict needs a dataclass instance, got {cfg!r}")
    return {name: _plain(getattr(cfg, name)) for name in _schema(type(cfg))}


def dump_config(cfg: Any, path: str | Path) -> None:
    """Write ``config_to_dict(cfg)`` to ``path`` as YAML in field order, creating parents."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")


def split_cli_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``argv`` into (dotted overrides for load_config, the rest for argparse), in order.

    An override is ``--a.b VALUE`` or ``--a.b=VALUE`` whose name contains a dot. A flag-style
    override always takes exactly one value, the next item, even one starting with '-' (so
    ``--train.lr -1`` works; write a boolean as ``--a.b true``). Undotted flags such as
    ``--config x.yaml`` and everything after a bare ``--`` stay in the rest.
    """
    overrides: list[str] = []
    rest: list[str] = []
    items = iter(argv)
    for item in items:
        if item == "--":
            rest += [item, *items]
        elif item.startswith("--") and "." in item[2:].split("=", 1)[0]:
            overrides += [item] if "=" in item else [item, *itertools.islice(items, 1)]
        else:
            rest.append(item)
    return overrides, rest


def _read_yaml(path: Path) -> Mapping[str, Any]:
    """The top-level mapping of the YAML file at ``path`` ({} when the file is empty)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path} (check the --config path)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from err
    if not isinstance(data, (dict, type(None))):
        kind = type(data).__name__
        raise ConfigError(f"config file {path} must be a mapping of keys at the top, got {kind}")
    return data or {}


def _parse_overrides(overrides: Sequence[str]) -> list[tuple[str, str]]:
    """(dotted key, raw text) pairs from ``--a.b V``, ``--a.b=V`` and ``a.b=V`` items."""
    pairs: list[tuple[str, str]] = []
    items = iter(overrides)
    for item in items:
        flag = item.startswith("--")
        body = item[2:] if flag else item
        if "=" in body:
            key, value = body.split("=", 1)
        else:  # a flag takes the next item as its value, whatever it looks like
            key, value = body, (next(items, None) if flag else None)
        if not key or value is None:
            raise ConfigError(f"cannot read override {item!r}: write --a.b VALUE or a.b=VALUE")
        pairs.append((key, value))
    return pairs


def _assign_mapping(cls: type, target: dict, mapping: Mapping, origin: _Origin, prefix: str):
    """Merge ``mapping`` (its keys may be dotted) into ``target``, pending updates for ``cls``."""
    for name, value in mapping.items():
        if not isinstance(name, str):
            raise ConfigError(f"config key {name!r} under '{prefix}' must be text ({origin.src})")
        _assign(cls, target, name.split("."), value, origin=origin, prefix=prefix)


def _assign(cls: type, target: dict, parts: list[str], value: Any, *, origin: _Origin, prefix=""):
    """Set the dotted key ``parts`` of ``cls`` in ``target`` to ``value``, checked and coerced."""
    name, rest = parts[0], parts[1:]
    key = f"{prefix}.{name}" if prefix else name
    schema = _schema(cls)
    if name not in schema:
        where = f"under '{prefix}'" if prefix else "at the top level"
        close = difflib.get_close_matches(name, list(schema), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"unknown config key '{key}' ({origin.src}); allowed keys {where}: "
            f"{', '.join(schema)}{hint}"
        )
    tp = schema[name][1]
    section = _section_type(tp)
    empty = value is None and not (get_origin(tp) in _UNIONS and _NONE in get_args(tp))
    if section is not None and (rest or isinstance(value, Mapping) or empty):
        slot = target.get(name)
        if dataclasses.is_dataclass(slot):  # an instance given in `data`, now partly overridden
            slot = {n: getattr(slot, n) for n in _schema(section)}
        target[name] = slot = slot if isinstance(slot, dict) else {}
        if rest:
            _assign(section, slot, rest, value, origin=origin, prefix=key)
        elif value:
            _assign_mapping(section, slot, value, origin, key)
    elif rest:
        full = ".".join([key, *rest])
        raise ConfigError(f"config key '{key}' is a value, not a section: cannot set '{full}'")
    else:
        target[name] = _coerce(value, tp, key, origin)


def _build(cls: type[C], updates: dict[str, Any], prefix: str, base: Any) -> C:
    """Construct ``cls`` from the explicit choices of ``base`` (an instance or None) overlaid
    with ``updates``; sections are built recursively on top of their current defaults."""
    schema = _schema(cls)
    kwargs = _base_kwargs(cls, base)
    for name, value in updates.items():
        section = _section_type(schema[name][1])
        if section is not None and isinstance(value, dict):
            if base is not None:
                sub = getattr(base, name)
            else:  # the field's default, which may be a preset such as TrainConfig(lr=1e-3)
                f = schema[name][0]
                sub = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            sub = sub if isinstance(sub, section) else None
            value = _build(section, value, f"{prefix}.{name}" if prefix else name, sub)
        kwargs[name] = value
    for name, (f, _) in schema.items():
        if name not in kwargs and f.default is f.default_factory is dataclasses.MISSING:
            key = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"missing required config key '{key}'; set it in the YAML or --{key}")
    try:
        return cls(**kwargs)
    except ConfigError as err:  # name the key from the top, e.g. 'lr' → 'train.lr'
        if prefix and hasattr(err, "config_key"):
            require(False, f"{prefix}.{err.config_key}", err.config_problem)
        if prefix:
            raise ConfigError(f"{err} (in config section '{prefix}')") from err
        raise


def _base_kwargs(cls: type, base: Any) -> dict[str, Any]:
    """The init fields of ``base`` that differ from a default-built ``cls`` (all, if that fails).
    Leaving equal values out lets ``__post_init__`` derive them afresh from the new settings."""
    if base is None:
        return {}
    values = {name: getattr(base, name) for name in _schema(cls)}
    try:
        plain = cls()
    except (TypeError, ConfigError):
        return values
    return {name: v for name, v in values.items() if v != getattr(plain, name)}


def _coerce(value: Any, tp: Any, key: str, origin: _Origin) -> Any:
    """``value`` checked against annotation ``tp`` and converted; ConfigError names ``key``."""
    if origin.cli and isinstance(value, str) and not _keeps_text(tp):
        value = _parse_text(value)
    kind = get_origin(tp) or tp
    if tp is Any or tp is object:
        return value
    if kind in _UNIONS:
        return _to_union(value, tp, key, origin)
    if kind is Literal:
        return _to_literal(value, tp, key, origin)
    if kind in _SEQUENCES:
        return _to_sequence(value, tp, key, origin)
    if kind in (dict, Mapping) and isinstance(value, Mapping):
        key_type, value_type = get_args(tp) or (Any, Any)
        return {
            _coerce(k, key_type, key, origin): _coerce(v, value_type, f"{key}.{k}", origin)
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):  # e.g. list[Section] items
        updates: dict[str, Any] = {}
        _assign_mapping(tp, updates, value, origin, key)
        return _build(tp, updates, key, None)
    try:
        if tp in _SCALARS:
            return _to_scalar(value, tp)
        if isinstance(tp, type) and isinstance(value, tp):
            return value
    except (TypeError, ValueError):
        pass
    raise _type_error(key, tp, value, origin)


def _to_union(value: Any, tp: Any, key: str, origin: _Origin) -> Any:
    options = [a for a in get_args(tp) if a is not _NONE]
    text = value.strip().lower() if isinstance(value, str) else value
    if _NONE in get_args(tp) and (value is None or text in ("null", "none", "~")):
        return None
    if len(options) == 1:  # Optional[X]: keep X's own, more precise error
        return _coerce(value, options[0], key, origin)
    for option in options:
        try:
            return _coerce(value, option, key, origin)
        except ConfigError:
            continue
    raise _type_error(key, tp, value, origin)


def _to_literal(value: Any, tp: Any, key: str, origin: _Origin) -> Any:
    options = get_args(tp)
    for option in options:
        if type(value) is type(option) and value == option:
            return option
        if bool not in (type(value), type(option)) and str(value) == str(option):
            return option  # "1" from text for Literal[1], and the reverse
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{_type_error(key, tp, value, origin)}{hint}")


def _to_sequence(value: Any, tp: Any, key: str, origin: _Origin) -> list | tuple:
    kind, args = get_origin(tp) or tp, get_args(tp)
    if isinstance(value, str):  # "a,b" or, on the command line, "[a, b]"
        text = value.strip()
        if origin.cli and text.startswith("["):
            value = _parse_text(text)
        else:
            value = [part.strip() for part in text.split(",")] if text else []
    fixed = kind is tuple and args and args[-1] is not Ellipsis
    if not isinstance(value, (list, tuple)) or fixed and len(value) != len(args):
        raise _type_error(key, tp, value, origin)
    item_types = args if fixed else [args[0] if args else Any] * len(value)
    pairs = enumerate(zip(value, item_types))
    items = [_coerce(v, t, f"{key}[{i}]", origin) for i, (v, t) in pairs]
    return tuple(items) if kind is tuple else items


def _to_scalar(value: Any, tp: type) -> Any:
    """``value`` as int, float, bool, str or Path, else TypeError/ValueError. Numbers and bools
    may be text ("200", "3e-4", "yes"); a bool is never a number, nor a number text."""
    if isinstance(value, bool) and tp is not bool:
        raise TypeError("a bool is not a number or text")
    if tp is bool:
        word = str(value).strip().lower() if isinstance(value, (int, str)) else ""
        if word in _TRUE | _FALSE:
            return word in _TRUE
    elif tp in (int, float) and isinstance(value, (int, float, str)):
        number = value
        if isinstance(value, str):
            number = int(value) if value.strip().lstrip("+-").isdigit() else float(value)
        if tp is float:
            return float(number)
        if isinstance(number, int) or number.is_integer():  # 1e3 → 1000; 2.5 is not an int
            return int(number)
    elif tp is str and isinstance(value, str):
        return value
    elif tp in (Path, PurePath) and isinstance(value, (str, PurePath)):
        return Path(value)
    raise TypeError(f"not {tp.__name__}")


def _type_error(key: str, tp: Any, value: Any, origin: _Origin) -> ConfigError:
    return ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {value!r} ({origin.src})")


def _type_name(tp: Any) -> str:
    kind = get_origin(tp)
    if kind is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if kind in _UNIONS:
        return " or ".join("None" if a is _NONE else _type_name(a) for a in get_args(tp))
    return repr(tp).replace("typing.", "") if kind else getattr(tp, "__name__", repr(tp))


def _parse_text(text: str) -> Any:
    """Command-line text as YAML reads it (``"200"`` → 200), or the text itself if not YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _keeps_text(tp: Any) -> bool:
    """Whether command-line text for ``tp`` stays text rather than being read as YAML first:
    str, Path, all-str Literals, and sequences (which split on commas themselves)."""
    kind = get_origin(tp) or tp
    if kind is Literal:
        return all(isinstance(a, str) for a in get_args(tp))
    if kind in _UNIONS:
        return all(_keeps_text(a) for a in get_args(tp) if a is not _NONE)
    return kind in (str, Path, PurePath, *_SEQUENCES)


def _section_type(tp: Any) -> type | None:
    """The dataclass of a section field (``Sub`` or ``Sub | None``), else None."""
    if get_origin(tp) in _UNIONS:
        options = [a for a in get_args(tp) if a is not _NONE]
        tp = options[0] if len(options) == 1 else None
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


@functools.cache
def _schema(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """Init fields of ``cls`` by name, each with its resolved type annotation."""
    hints = get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
