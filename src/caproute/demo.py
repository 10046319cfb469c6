"""The offline demo: the main pipeline on the observation set shipped in the package.

Steps: import the builtin observations into a DuckDB store, build DARS supervision, run the
diagnostics (table, JSON, PNG). Later stages (router benchmark, report) are added as they land.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table


def run_demo(out: Path, console: Console | None = None) -> dict:
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
    write_json(results, out / "demo.json")
    console.print(f"outputs in {out}/")
    return results
