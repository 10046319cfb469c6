"""The grid engine: same results for any --jobs and on Ray; a killed Ray worker is retried and
nothing is counted twice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _engine_cells import dying_cell, seeded_cell  # noqa: E402
from caproute.core.runtime import map_cells  # noqa: E402

CELLS = [{"seed": 42 + i} for i in range(6)]


def test_local_results_identical_for_any_jobs():
    one = map_cells(seeded_cell, CELLS, shared={"offset": 1.0}, jobs=1)
    two = map_cells(seeded_cell, CELLS, shared={"offset": 1.0}, jobs=2)
    assert one == two and len(one) == 6


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_matches_local(ray_local):
    local = map_cells(seeded_cell, CELLS, shared={"offset": 1.0}, jobs=1)
    assert map_cells(seeded_cell, CELLS, shared={"offset": 1.0}, engine="ray") == local


@pytest.mark.slow
def test_ray_worker_killed_mid_grid(ray_local, tmp_path):
    cells = [{"i": i} for i in range(8)]
    out = map_cells(dying_cell, cells, shared={"dir": str(tmp_path), "die_at": 3}, engine="ray")
    assert out == [i * 10 for i in range(8)]
    assert (tmp_path / "died").exists()
    # every cell completed exactly once (the killed attempt never completed)
    for i in range(8):
        assert (tmp_path / f"ran-{i}").read_text() == "x"
