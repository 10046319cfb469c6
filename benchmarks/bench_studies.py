"""Issue 15 benchmark: ``caproute bench`` with its default studies on a 300-query, 7-model set.

The library call behind ``caproute bench --routers all --single-shot-runs 3 --jobs 2`` (default
studies: main with 5 DARS trainings per router, ablation, K x R, beta, Pareto, two-model metrics) on
synthetic observations shaped like one DARS dataset (:func:`bench_grid.synthetic_dataset`): 300
training queries x 7 models x 25 observations (5 rewrites x 5 decodes), 300 test queries; TF-IDF.
Goal: <= 5 minutes on 2 cores. Reported: wall time, CPU time of this process and its workers,
cells vs trainings actually run (cells that would train the same router share one fit, see
``caproute.evaluate.grid.plan_groups``), and the wall time per study summed over its cells.

``quick=True``: routers knn, mlp and embedllm only (the figure is then not the goal's).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

GOAL_S = 300.0


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run(quick: bool = False) -> list[dict]:
    from bench_grid import synthetic_dataset

    from caproute.evaluate.bench import BenchConfig, run_bench
    from caproute.evaluate.protocol import prepare_experiment

    exp = prepare_experiment(synthetic_dataset(n_train=300, n_test=300, n_models=7, seed=1))
    routers = "knn,mlp,embedllm" if quick else "all"
    config = BenchConfig(routers=routers, single_shot_runs=3, jobs=2)
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), _cpu()
    res = run_bench(exp, config, progress=False)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    load1 = os.getloadavg()[0]
    m = res.meta
    by_study = res.timing.groupby("study")[["cells", "trainings", "cell_s"]].sum()
    studies = "; ".join(f"{s}: {int(r.cells)} cells / {int(r.trainings)} fits / {r.cell_s:.0f} s"
                        for s, r in by_study.iterrows())
    note = (f"{m['n_train_queries']} train / {m['n_test_queries']} test q x {len(exp.models)} models x 25 obs, "
            f"TF-IDF; routers {routers}; {m['n_cells']} cells, {m['n_trainings']} trainings; "
            f"load average {load0:.1f} at start, {load1:.1f} at end on {os.cpu_count()} cores")
    rows = [{"benchmark": "studies", "figure": "caproute bench, default studies, 300 q x 7 models, "
             "--single-shot-runs 3, 2 cores" + (" (quick: 3 routers)" if quick else ""),
             "value": round(wall, 1), "unit": "s", "goal": None if quick else f"<= {GOAL_S:.0f} s",
             "baseline": None if quick else GOAL_S, "ratio": None if quick else round(wall / GOAL_S, 3),
             "notes": note},
            {"benchmark": "studies", "figure": "same run: CPU time (process + workers)", "value": round(cpu, 1),
             "unit": "s", "goal": None, "baseline": None, "ratio": None,
             "notes": f"CPU / 2 = {cpu / 2:.0f} s is the wall time two free cores would need; per study "
                      f"(wall summed over cells, incl. waiting for a core): {studies}"}]
    for r in rows:
        print(json.dumps(r), file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
