"""``caproute supervise`` and ``caproute diagnose``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from caproute.cli import app
from caproute.cli.common import BetaOpt, DataOpt, DatasetOpt, LambdaOpt, SplitOpt, StoreOpt
from caproute.core.atomic import check_output_file, write_json
from caproute.supervise.utility import DEFAULT_BETA, DEFAULT_LAMBDA

console = Console()


def _validate_streamed(data: str) -> None:
    """The validation layer's checks, run in DuckDB over the Parquet that --streaming reads."""
    import os

    from caproute.data.source import builtin_path, is_builtin
    from caproute.data.validate import validate_parquet_sql
    from caproute.errors import DataError

    p = str(builtin_path(data)) if is_builtin(data) else str(data)
    if os.path.isdir(p):
        p = os.path.join(p, "**", "*.parquet")
    elif "*" not in p and not os.path.exists(p):
        raise DataError("no such file or directory", source=p)
    validate_parquet_sql(p, source=str(data))


@app.command("supervise")
def supervise_cmd(
    out: Annotated[Path, typer.Option(
        "--out", help="output table, format from the suffix: .parquet, .csv or .jsonl "
                      "(query_id, model, n, mu_q, mu_c, sigma_q, utility, ...)")],
    store: StoreOpt = None, data: DataOpt = None, dataset: DatasetOpt = None,
    lam: LambdaOpt = DEFAULT_LAMBDA, beta: BetaOpt = DEFAULT_BETA,
    streaming: Annotated[bool, typer.Option(
        "--streaming/--no-streaming", help="out of core: stream a Parquet file/directory/glob given with --data through DuckDB")] = False,
    memory_limit: Annotated[str, typer.Option("--memory-limit", help="DuckDB memory limit for --streaming")] = "2GB",
    partitions: Annotated[int, typer.Option("--partitions", help="query hash partitions for --streaming")] = 8,
) -> None:
    """DARS capability statistics and utility per (query, model) of the training split."""
    from caproute.core.atomic import table_format, write_table

    if streaming:
        from caproute.errors import DataError
        from caproute.supervise.outofcore import supervise_out_of_core

        if data is None:
            raise DataError("--streaming reads Parquet given with --data", source="arguments")
        if table_format(out) != "parquet":
            raise DataError("--streaming writes Parquet: use a .parquet suffix", source=f"--out {out}")
        check_output_file(out, option="--out")
        _validate_streamed(data)
        info = supervise_out_of_core(data, out, lam=lam, beta=beta, partitions=partitions,
                                     memory_limit=memory_limit, dataset=dataset)
        console.print(f"{info['pairs']} pairs ({', '.join(info['datasets'])}) -> {out}")
        return
    from caproute.data.source import load_observations
    from caproute.supervise.api import supervision_table

    table_format(out)
    check_output_file(out, option="--out")
    obs, name = load_observations(store=store, data=data, dataset=dataset)
    table = supervision_table(obs, lam, beta)
    write_table(table, out)
    console.print(f"{name}: {table['query_id'].nunique()} queries x {table['model'].nunique()} models "
                  f"-> {out}")
    from caproute.supervise.coverage import coverage_from_pairs

    cov = coverage_from_pairs(table["query_id"], table["model"])
    if not cov.complete:     # a partial grid: the table holds the observed pairs only
        console.print(f"partial grid: {cov.summary()}")



@app.command("diagnose")
def diagnose_cmd(
    store: StoreOpt = None, data: DataOpt = None, dataset: DatasetOpt = None, lam: LambdaOpt = DEFAULT_LAMBDA,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the diagnostics as JSON")] = None,
    png: Annotated[Path | None, typer.Option("--png", help="Figure 2(a,b)-style plot (default: next to --json)")] = None,
    split: SplitOpt = "train",
) -> None:
    """Outcome instability, winner-flip rate, single-vs-distribution disagreement, variance split."""
    from caproute.data.source import load_observations
    from caproute.supervise.api import diagnostics
    from caproute.supervise.diagnostics import plot_diagnostics

    for opt, path in (("--json", json_out), ("--png", png)):
        if path is not None:
            check_output_file(path, option=opt)
    if png is None and json_out is not None:
        check_output_file(json_out.with_suffix(".png"), option="--png")
    obs, name = load_observations(store=store, data=data, dataset=dataset)
    diag, stats = diagnostics(obs, lam, None if split == "all" else split)
    table = Table(title=f"DARS diagnostics: {name} ({diag.n_queries} queries, {diag.n_models} models, "
                        f"{diag.n_observations} observations, lambda={lam})")
    table.add_column("diagnostic")
    table.add_column("value", justify="right")
    for key in ("outcome_instability", "winner_flip_rate", "single_vs_da_disagreement",
                "input_variance", "output_variance", "input_variance_share"):
        table.add_row(key, f"{getattr(diag, key):.4f}")
    console.print(table)
    from caproute.supervise.coverage import Coverage

    console.print(Coverage.from_dict(diag.coverage).summary())
    if json_out is not None:
        write_json(diag.to_dict(), json_out)
        png = png or json_out.with_suffix(".png")
    if png is not None:
        plot_diagnostics(stats, diag, png)
        console.print(f"plot: {png}")
