import pytest

from fullchain.world import WorldConfig, write_world


@pytest.fixture(scope="session")
def quick_world(tmp_path_factory):
    """The quick world written once for all world tests: (out_dir, counts)."""
    out = tmp_path_factory.mktemp("world") / "quick"
    return out, write_world(out, WorldConfig.preset("quick"))
