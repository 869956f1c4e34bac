import pytest

from fullchain.config import ConfigError
from fullchain.world import WorldConfig, build_world


def test_presets():
    assert WorldConfig.preset("default") == WorldConfig()
    quick = WorldConfig.preset("quick", seed=7)
    assert quick.seed == 7 and quick.num_people < WorldConfig().num_people
    with pytest.raises(ConfigError, match="unknown; use one of"):
        WorldConfig.preset("huge")
    with pytest.raises(ConfigError, match="world.num_persons: unknown key"):
        WorldConfig.preset("quick", num_persons=3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_people": 3}, "world.num_people"),
        ({"num_people": -1}, "world.num_people"),
        ({"qa_fraction": 1.5}, "world.qa_fraction"),
        ({"qa_fraction": 0.0}, "world.qa_fraction"),
        ({"zh_fraction": -0.1}, "world.zh_fraction"),
        ({"bios_per_person": 0}, "world.bios_per_person"),
        ({"seed": "x"}, "world.seed"),
    ],
)
def test_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        WorldConfig(**kwargs)


def test_keyword_only():
    with pytest.raises(TypeError):
        WorldConfig(10)  # type: ignore[misc]


def test_world_is_pure_function_of_config():
    cfg = WorldConfig(num_people=40, seed=3)
    a, b = build_world(cfg), build_world(cfg)
    assert a.people == b.people and a.cities == b.cities
    assert build_world(WorldConfig(num_people=40, seed=4)).people != a.people
    # counts of one part do not reshuffle another
    assert build_world(WorldConfig(num_people=40, seed=3, num_dialogues=1)).people == a.people
    assert sum(p.split == "train" for p in a.people) == 20
    assert any(p.has_zh for p in a.people if p.split == "heldout")
