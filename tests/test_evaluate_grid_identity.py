"""The grid's numbers do not move with performance work (issue 15): a small grid (every paper
family + MF, 2 single-shot sets and DARS, sparse TF-IDF) run through today's ``run_grid`` gives the
per-cell utilities, qualities, costs and choice shares stored in tests/data/grid_reference.json,
which were computed with the code before the speed-ups (tests/data/make_grid_reference.py).
The utilities follow from discrete routing choices, so they are exact; a different CPU (other
SIMD kernels in torch / BLAS) could flip a near-tie, in which case regenerate the reference there
with the pre-change code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
sys.path.insert(0, str(DATA.parents[1] / "benchmarks"))


def test_small_grid_matches_stored_reference():
    from make_grid_reference import SIZE, small_grid

    from caproute.evaluate.bench import run_grid

    ref = json.loads((DATA / "grid_reference.json").read_text())
    assert ref["size"] == SIZE
    data, cells = small_grid()
    assert data.X_train.shape[1] == ref["n_features"] >= 512     # wide enough for the sparse path
    got = run_grid(data, cells, jobs=1, progress=None)
    assert len(got) == len(ref["cells"])
    for res, exp in zip(got, ref["cells"], strict=True):
        assert (res["router"], res["supervision"], res["run"]) == (exp["router"], exp["supervision"], exp["run"])
        assert res["shares"] == exp["shares"], exp["router"]
        for view, vals in res["views"].items():
            for k in ("utility", "quality", "cost"):
                assert vals[k] == pytest.approx(exp[f"{view}_{k}"], rel=0, abs=1e-12), (exp["router"], view, k)
