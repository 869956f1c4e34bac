"""The same pipeline on a local Ray instance gives the same documents and funnel as locally.
Skipped when ray is not installed (it is the optional `ray` extra, not in `dev`)."""

import pytest

from fullchain.data.pipeline import run
from fullchain.data.stats import without_timings
from fullchain.data.writers import document_files, read_docs

from .test_pipeline import config, make_inputs

pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_matches_local(tmp_path):
    make_inputs(tmp_path, files=4)
    local = run(config(tmp_path, "local"))
    on_ray = run(config(tmp_path, "ray", executor="ray", workers=2))
    assert without_timings(local["steps"]) == without_timings(on_ray["steps"])
    docs = [[d for p in document_files(tmp_path / name) for d in read_docs(p)]
            for name in ("local", "ray")]
    assert docs[0] == docs[1] and docs[0]
