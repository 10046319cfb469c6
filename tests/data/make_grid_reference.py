"""Stored reference of tests/test_evaluate_grid_identity.py: the per-cell numbers of a small grid
(every paper family + MF, 2 single-shot sets and DARS, TF-IDF wide enough for the sparse path),
computed with the code BEFORE the issue-15 speed-ups; the test asserts that today's code gives the
same numbers. Regenerate only when a change is meant to move the numbers:

    PYTHONPATH=src .venv/bin/python tests/data/make_grid_reference.py > tests/data/grid_reference.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))

FAMILIES = ("mlp", "knn", "embedllm", "avengerspro", "graphrouter", "mirt", "rmsoftmax", "mf")
SIZE = {"n_train": 40, "n_test": 30, "n_models": 4, "k": 3, "r": 3, "seed": 5}


def small_grid():
    from bench_grid import synthetic_dataset

    from caproute.evaluate.bench import featurize
    from caproute.evaluate.grid import Cell, grid_data
    from caproute.evaluate.protocol import prepare_experiment

    exp = prepare_experiment(synthetic_dataset(**SIZE))
    X_train, X_test, _ = featurize(exp, "tfidf")
    data = grid_data(exp, X_train, X_test, lam=0.05, lambdas=(), pair=None)
    cells = []
    for fam in FAMILIES:
        cells += [Cell("main", fam, "single", run, 42 + run, 0.2) for run in range(2)]
        cells.append(Cell("main", fam, "dars", 0, 42, 0.2))
    return data, cells


def main() -> None:
    from caproute.evaluate.grid import run_cell

    data, cells = small_grid()
    out = []
    for c in cells:
        res = run_cell(c, data)
        out.append({"router": c.router, "supervision": c.supervision, "run": c.run, "shares": res["shares"],
                    **{f"{v}_{k}": res["views"][v][k] for v in res["views"] for k in ("utility", "quality", "cost")}})
    print(json.dumps({"size": SIZE, "n_features": int(data.X_train.shape[1]), "cells": out}, indent=1))


if __name__ == "__main__":
    main()
