"""Module-level cell functions for the engine tests (workers import them by name)."""

import os
from pathlib import Path

import numpy as np


def seeded_cell(cell, shared):
    rng = np.random.default_rng(cell["seed"])
    return float(rng.normal() + shared["offset"])


def dying_cell(cell, shared):
    """Kill this worker process the first time cell `die_at` runs (a marker file remembers)."""
    marker = Path(shared["dir"]) / f"ran-{cell['i']}"
    if cell["i"] == shared["die_at"] and not (Path(shared["dir"]) / "died").exists():
        (Path(shared["dir"]) / "died").write_text("1")
        os._exit(1)
    with open(marker, "a") as fh:   # one line per completed execution of this cell
        fh.write("x")
    return cell["i"] * 10
