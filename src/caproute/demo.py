"""The offline demo: the main pipeline on the observation set shipped in the package.

Steps: import the builtin observations into a DuckDB store, build DARS supervision, run the
diagnostics (table, JSON, PNG), then the router benchmark (``caproute bench``): every router
trained single-shot (20 resampled training sets) and with DARS, scored on the test views, with
the ablation table, K x R and beta studies for kNN and MIRT, and the HTML report.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

#: the demo's bench: small enough for <= 3 minutes on 2 cores (the paper uses 100 single-shot runs)
DEMO_SINGLE_SHOT_RUNS = 20
DEMO_STUDY_ROUTERS = ("knn", "mirt")   # the paper's ablation (Table 2) uses MIRT
DEMO_KXR_SUBSAMPLES = 5


def run_demo(out: Path, console: Console | None = None, jobs: int | None = None) -> dict:
    from caproute.data.atomic import write_json, write_parquet
    from caproute.data.source import BUILTIN, builtin_path, read_source
    from caproute.data.store import ObservationStore
    from caproute.supervise.api import diagnostics, supervision_table
    from caproute.supervise.diagnostics import plot_diagnostics

    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]caproute demo (offline, builtin data)")
    console.print(f"data: {builtin_path()}")
    obs = read_source(BUILTIN)
    store_path = out / "observations.duckdb"
    for stale in (store_path, store_path.with_name(store_path.name + ".wal")):
        stale.unlink(missing_ok=True)  # the demo rebuilds its store from the shipped data every run
    with ObservationStore(store_path) as store:
        store.upsert(obs, source="builtin", validate=False)
        console.print(f"store {store_path}: {store.count()} observations, datasets {store.datasets()}")
    results: dict = {"datasets": {}}
    for name, part in obs.groupby("dataset", sort=True):
        table = supervision_table(part)
        write_parquet(table, out / f"{name}.supervision.parquet")
        diag, stats = diagnostics(part)
        write_json(diag.to_dict(), out / f"{name}.diagnostics.json")
        plot_diagnostics(stats, diag, out / f"{name}.diagnostics.png")
        t = Table(title=f"{name}: DARS diagnostics ({diag.n_queries} train queries x {diag.n_models} models)")
        t.add_column("diagnostic")
        t.add_column("value", justify="right")
        for key in ("outcome_instability", "winner_flip_rate", "single_vs_da_disagreement",
                    "input_variance", "output_variance"):
            t.add_row(key, f"{getattr(diag, key):.4f}")
        console.print(t)
        results["datasets"][name] = {"diagnostics": diag.to_dict()}
    results["bench"] = run_demo_bench(out / "bench", console, jobs=jobs)
    write_json(results, out / "demo.json")
    console.print(f"outputs in {out}/")
    return results


def run_demo_bench(report_dir: Path, console: Console, jobs: int | None = None) -> dict:
    """Single-shot vs DARS on the builtin data; prints Table 1 and writes the report folder."""
    import os

    from caproute.evaluate.bench import BenchConfig, run_bench
    from caproute.evaluate.protocol import load_experiment
    from caproute.evaluate.report import console_table1, write_report

    exp = load_experiment(data="builtin")
    config = BenchConfig(routers="all", single_shot_runs=DEMO_SINGLE_SHOT_RUNS, study_routers=DEMO_STUDY_ROUTERS,
                         kxr_subsamples=DEMO_KXR_SUBSAMPLES, jobs=jobs or min(2, os.cpu_count() or 1))
    console.rule("[bold]router benchmark: single-shot vs DARS supervision")
    res = run_bench(exp, config)
    t1 = console_table1(res)
    t = Table(title=f"{exp.dataset}: test utility (lambda = {config.lam}); single-shot = mean ± std over "
                    f"{config.single_shot_runs} training sets, DARS = one training (beta = {config.beta})")
    for c in t1.columns:
        t.add_column(str(c), justify="left" if c == "Router" else "right", no_wrap=c == "Router")
    for row in t1.itertuples(index=False):
        t.add_row(*[str(x) for x in row])
    console.print(t)
    write_report(res, report_dir, title="caproute demo: single-shot vs DARS on the builtin data")
    console.print(f"report: {report_dir}/report.html (tables, figures), {report_dir}/report.md")
    return {"rows": res.json_rows(), "report": str(report_dir), "seconds": res.meta["seconds"]}
