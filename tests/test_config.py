"""Typed configs: defaults, YAML merge, dotted overrides, coercion, and errors that name the fix."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from fullchain.config import (
    ConfigError,
    config_to_dict,
    dump_config,
    load_config,
    require,
    split_cli_overrides,
)


@dataclass(kw_only=True)
class OptimConfig:
    lr: float = 3e-4
    betas: tuple[float, ...] = (0.9, 0.95)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"

    def __post_init__(self):
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}; try 3e-4")


@dataclass(kw_only=True)
class TrainConfig:
    max_steps: int = 100
    batch_size: int = 8
    compile: bool = False
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(kw_only=True)
class LoraConfig:
    rank: int = 8
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass(kw_only=True)
class RunConfig:
    name: str = "demo"
    seed: int = 0
    out_dir: Path = Path("runs/demo")
    init_from: Path | None = None
    max_seq_len: Optional[int] = None  # noqa: UP045 — the typing.Optional spelling must work too
    precision: Literal["fp32", "bf16"] = "bf16"
    layers: list[int] = field(default_factory=lambda: [1, 2])
    window: tuple[int, int] = (0, 0)
    tags: dict[str, str] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=lambda: {"web": 1.0})
    train: TrainConfig = field(default_factory=TrainConfig)
    lora: LoraConfig | None = None
    steps_per_log: int = field(init=False, default=0)  # derived, so neither settable nor dumped

    def __post_init__(self):
        self.steps_per_log = max(1, self.train.max_steps // 10)


@dataclass(kw_only=True)
class PresetConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=500))


@dataclass(kw_only=True)
class NeedsDataConfig:
    data_dir: Path
    stages: list[LoraConfig] = field(default_factory=list)


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def message(cls=RunConfig, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cls, **kwargs)
    return str(info.value)


def test_defaults():
    cfg = load_config(RunConfig)
    assert cfg == RunConfig()
    assert cfg.train.optim.lr == 3e-4 and cfg.lora is None and cfg.steps_per_log == 10


def test_yaml_merge_keeps_unset_defaults(tmp_path):
    path = write(tmp_path, "name: tiny\ntrain:\n  max_steps: 5\n  optim:\n    lr: 1.0e-3\n")
    cfg = load_config(RunConfig, path=path)
    assert cfg.name == "tiny" and cfg.train.max_steps == 5 and cfg.train.optim.lr == 1e-3
    assert cfg.train.batch_size == 8 and cfg.train.optim.schedule == "cosine"
    assert cfg.steps_per_log == 1  # derived field recomputed from the merged value


def test_precedence_file_then_data_then_overrides(tmp_path):
    path = write(tmp_path, "seed: 1\nname: file\ntrain: {max_steps: 7}\n")
    data = {"seed": 2, "train": {"batch_size": 4}}
    cfg = load_config(RunConfig, path=path, data=data, overrides=["--seed", "3"])
    assert (cfg.seed, cfg.name, cfg.train.max_steps, cfg.train.batch_size) == (3, "file", 7, 4)


@pytest.mark.parametrize(
    "overrides",
    [["--train.optim.lr", "1e-3"], ["--train.optim.lr=1e-3"], ["train.optim.lr=1e-3"]],
)
def test_nested_override_forms(overrides):
    cfg = load_config(RunConfig, overrides=overrides)
    assert cfg.train.optim.lr == 1e-3 and cfg.train.max_steps == 100


def test_dotted_keys_in_yaml(tmp_path):
    cfg = load_config(RunConfig, path=write(tmp_path, "train.max_steps: 9\n"))
    assert cfg.train.max_steps == 9


def test_section_default_preset_is_kept_under_override():
    cfg = load_config(PresetConfig, overrides=["--train.batch_size", "2"])
    assert cfg.train.max_steps == 500 and cfg.train.batch_size == 2


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("seed", "200", 200),
        ("seed", "1e3", 1000),
        ("train.optim.lr", "3e-4", 3e-4),
        ("train.optim.lr", "1", 1.0),
        ("train.compile", "true", True),
        ("train.compile", "yes", True),
        ("train.compile", "1", True),
        ("train.compile", "false", False),
        ("train.compile", "no", False),
        ("train.compile", "0", False),
        ("name", "007", "007"),
        ("name", "true", "true"),
        ("out_dir", "out/run1", Path("out/run1")),
        ("init_from", "null", None),
        ("init_from", "none", None),
        ("init_from", "ckpt/step100", Path("ckpt/step100")),
        ("max_seq_len", "2048", 2048),
        ("max_seq_len", "None", None),
        ("precision", "fp32", "fp32"),
        ("layers", "3,4, 5", [3, 4, 5]),
        ("layers", "[6, 7]", [6, 7]),
        ("layers", "", []),
        ("window", "2,3", (2, 3)),
        ("train.optim.betas", "0.8,0.99", (0.8, 0.99)),
        ("tags", "{team: a, id: '7'}", {"team": "a", "id": "7"}),
        ("weights", "{web: 2}", {"web": 2.0}),
        ("train.optim.schedule", "linear", "linear"),
    ],
)
def test_cli_coercion(key, text, expected):
    cfg = load_config(RunConfig, overrides=[f"--{key}", text])
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    assert value == expected and type(value) is type(expected)


def test_yaml_coercion(tmp_path):
    text = (
        "seed: 5\nout_dir: x\nlayers: [1, '2']\nwindow: [4, 5]\ntags: {a: b}\n"
        "train: {compile: yes, optim: {lr: 2, betas: [0.5, 0.6]}}\nmax_seq_len: null\n"
    )
    cfg = load_config(RunConfig, path=write(tmp_path, text))
    assert cfg.out_dir == Path("x") and cfg.layers == [1, 2] and cfg.window == (4, 5)
    assert cfg.train.compile is True and cfg.tags == {"a": "b"} and cfg.max_seq_len is None
    assert cfg.train.optim.lr == 2.0 and type(cfg.train.optim.lr) is float
    assert cfg.train.optim.betas == (0.5, 0.6)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"seed": True}, "config key 'seed' expects int, got True"),
        ({"seed": 2.5}, "config key 'seed' expects int, got 2.5"),
        ({"name": 7}, "config key 'name' expects str, got 7"),
        ({"train": {"optim": {"lr": "abc"}}}, "config key 'train.optim.lr' expects float"),
        ({"layers": [1, "x"]}, "config key 'layers[1]' expects int, got 'x'"),
        ({"window": [1, 2, 3]}, "config key 'window' expects tuple[int, int]"),
        ({"tags": ["a"]}, "config key 'tags' expects dict[str, str]"),
        ({"train": 5}, "config key 'train' expects TrainConfig, got 5"),
        ({"max_seq_len": "x"}, "config key 'max_seq_len' expects int, got 'x'"),
    ],
)
def test_wrong_type_names_key(data, fragment):
    assert fragment in message(data=data)


def test_wrong_type_from_cli():
    text = message(overrides=["--train.optim.lr", "abc"])
    assert text == "config key 'train.optim.lr' expects float, got 'abc' (on the command line)"


def test_literal_violation_lists_allowed_values():
    text = message(overrides=["--precision", "fp8"])
    assert "config key 'precision' expects one of 'fp32', 'bf16', got 'fp8'" in text
    assert "did you mean 'bf16'?" in message(data={"precision": "bf17"})


def test_unknown_key_top_level():
    text = message(data={"nmae": "x"})
    assert "unknown config key 'nmae' (in data)" in text
    assert "allowed keys at the top level: name, seed," in text
    assert "steps_per_log" not in text and "did you mean 'name'?" in text


def test_unknown_nested_key_names_file_and_suggestion(tmp_path):
    path = write(tmp_path, "train:\n  max_stepz: 3\n")
    text = message(path=path)
    assert f"unknown config key 'train.max_stepz' (in {path})" in text
    assert "allowed keys under 'train': max_steps, batch_size, compile, optim" in text
    assert "(did you mean 'max_steps'?)" in text


def test_unknown_key_from_cli_and_derived_field():
    assert "unknown config key 'train.optim.lrr'" in message(overrides=["--train.optim.lrr=1"])
    assert "unknown config key 'steps_per_log'" in message(overrides=["--steps_per_log", "3"])


def test_value_is_not_a_section():
    assert "'seed' is a value, not a section" in message(overrides=["--seed.x", "1"])


def test_optional_section_from_null_and_override(tmp_path):
    path = write(tmp_path, "lora: null\n")
    assert load_config(RunConfig, path=path).lora is None
    cfg = load_config(RunConfig, path=path, overrides=["--lora.rank", "4"])
    assert cfg.lora == LoraConfig(rank=4)
    cfg = load_config(RunConfig, data={"lora": {"targets": "a,b"}})
    assert cfg.lora == LoraConfig(targets=["a", "b"])


def test_section_instance_in_data_then_override():
    data = {"train": TrainConfig(max_steps=3)}
    cfg = load_config(RunConfig, data=data, overrides=["--train.batch_size", "2"])
    assert cfg.train == TrainConfig(max_steps=3, batch_size=2)


def test_bad_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "name: x\nseed: 1\n  oops: 2\n")
    text = message(path=path)
    assert str(path) in text and "not valid YAML at line 3" in text


def test_yaml_top_level_must_be_mapping(tmp_path):
    assert "must be a mapping" in message(path=write(tmp_path, "- a\n- b\n"))


def test_empty_yaml_is_defaults(tmp_path):
    assert load_config(RunConfig, path=write(tmp_path, "")) == RunConfig()


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.yaml"
    assert f"config file not found: {path}" in message(path=path)


def test_post_init_error_is_qualified():
    text = message(overrides=["--train.optim.lr", "-1"])
    assert text == "config key 'train.optim.lr' must be > 0, got -1.0; try 3e-4"
    text = message(data={"train": {"batch_size": 0}})
    assert "batch_size must be >= 1, got 0 (in config section 'train')" in text


def test_missing_required_key_and_list_of_sections():
    assert "missing required config key 'data_dir'" in message(NeedsDataConfig)
    cfg = load_config(NeedsDataConfig, data={"data_dir": "d", "stages": [{"rank": 2}]})
    assert cfg.stages == [LoraConfig(rank=2)] and cfg.data_dir == Path("d")
    assert "unknown config key 'stages[0].rnk'" in message(
        NeedsDataConfig, data={"data_dir": "d", "stages": [{"rnk": 2}]}
    )


@pytest.mark.parametrize(
    "overrides", [["--seed"], ["seed"], ["--=3"]], ids=["no-value", "bare", "no-key"]
)
def test_malformed_overrides(overrides):
    assert "cannot read override" in message(overrides=overrides)


def test_round_trip(tmp_path):
    cfg = load_config(
        RunConfig,
        overrides=["--init_from", "ck", "--window", "1,2", "--lora.rank", "16", "--tags={a: b}"],
    )
    data = config_to_dict(cfg)
    assert data["init_from"] == "ck" and data["window"] == [1, 2] and data["lora"]["rank"] == 16
    assert "steps_per_log" not in data
    assert yaml.safe_load(yaml.safe_dump(data)) == data  # plain, YAML-serializable
    assert load_config(RunConfig, data=data) == cfg
    dump_config(cfg, tmp_path / "out" / "resolved.yaml")
    assert load_config(RunConfig, path=tmp_path / "out" / "resolved.yaml") == cfg


def test_split_cli_overrides():
    argv = ["--config", "x.yaml", "--train.optim.lr", "-1", "--seed", "3", "--lora.rank=4", "pos"]
    argv += ["--", "--train.max_steps", "9"]
    overrides, rest = split_cli_overrides(argv)
    assert overrides == ["--train.optim.lr", "-1", "--lora.rank=4"]
    assert rest == ["--config", "x.yaml", "--seed", "3", "pos", "--", "--train.max_steps", "9"]
    cfg = load_config(RunConfig, overrides=["--train.optim.lr", "2", *overrides[2:]])
    assert cfg.lora.rank == 4 and cfg.train.optim.lr == 2.0
