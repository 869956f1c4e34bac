"""Every YAML recipe loads into its typed config."""

from pathlib import Path

import pytest

from fullchain.config import load_config
from fullchain.train.pretrain import PretrainConfig

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs" / "pretrain").glob("*.yaml")) + sorted(
    (ROOT / "src" / "fullchain" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads(path):
    cfg = load_config(PretrainConfig, path=path)
    assert cfg.train.max_steps > 0


def test_recipes_found():
    assert len(RECIPES) >= 4
