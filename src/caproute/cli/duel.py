"""``caproute duel``: dueling-feedback routing experiments (FGTS.CDB vs baselines)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from caproute.cli import app
from caproute.cli.common import DataOpt, StoreOpt

console = Console()


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@app.command("duel")
def duel_cmd(
    store: StoreOpt = None,
    data: DataOpt = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="dataset name, comma-separated list, or 'all' (default: all; several "
                          "datasets = one category each)")] = None,
    policy: Annotated[str, typer.Option(
        "--policy", help="comma-separated: fgts-cdb, uniform, best-fixed, eps-greedy, maxinp, dars-knn")
    ] = "fgts-cdb,uniform,best-fixed,eps-greedy,maxinp,dars-knn",
    embeddings: Annotated[str, typer.Option(
        "--embeddings", help="comma-separated: {ccft,minilm}-{perf,perf-cost,excel-perf-cost,excel-mask}, "
                             "ccft, minilm")] = "ccft-excel-perf-cost,minilm",
    rounds: Annotated[int, typer.Option("--rounds", help="rounds T per seed")] = 2000,
    seeds: Annotated[int, typer.Option("--seeds", help="number of seeds (streams 42 + s)")] = 5,
    jobs: Annotated[int, typer.Option("--jobs", help="parallel processes")] = 1,
    engine: Annotated[str, typer.Option("--engine", help="local | ray")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result rows as JSON")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="directory for PNG curves, table, metadata")] = None,
    sampler: Annotated[str, typer.Option("--sampler", help="FGTS.CDB posterior sampler: sgld | laplace")] = "sgld",
    feel_good: Annotated[str, typer.Option(
        "--feel-good", help="Laplace sampler's feel-good term: importance | tilt")] = "importance",
    eta: Annotated[float, typer.Option("--eta", help="likelihood temperature eta")] = 0.25,
    mu: Annotated[float | None, typer.Option("--mu", help="feel-good weight (default 1/sqrt(T))")] = None,
    lambda_c: Annotated[float, typer.Option("--lambda-c", help="cost weight in r* = score - lambda_c cost")] = 1.0,
    scale: Annotated[float, typer.Option("--scale", help="Bradley-Terry scale s")] = 0.1,
    label: Annotated[str, typer.Option("--label", help="pairwise data: human | gpt35 | pandalm7b")] = "human",
    max_queries: Annotated[int, typer.Option("--max-queries", help="subsample queries (0 = all)")] = 1500,
    offline_fraction: Annotated[float, typer.Option("--offline-fraction")] = 0.2,
    epochs: Annotated[int, typer.Option("--ccft-epochs")] = 2,
    per_category: Annotated[int, typer.Option("--ccft-per-category")] = 5,
    temperature: Annotated[float, typer.Option("--temperature", help="softmax temperature of the weightings")] = 1.0,
    tau: Annotated[int, typer.Option("--tau", help="top-tau of the Excel weightings")] = 3,
    cache: Annotated[Path | None, typer.Option("--cache", help="cache for CCFT encoders and embeddings")] = None,
) -> None:
    """Contextual dueling bandit: all policies on the same query streams and seeds; regret curves."""
    from caproute.bandits.embeddings import CCFTConfig
    from caproute.bandits.environment import load_environment
    from caproute.bandits.experiment import DuelSpec, run_duel
    from caproute.bandits.report import write_report
    from caproute.data.atomic import write_json

    env = load_environment(store=store, data=data, dataset=dataset, lambda_c=lambda_c, scale=scale, label=label)
    spec = DuelSpec(rounds=rounds, seeds=seeds, policies=_split(policy), embeddings=_split(embeddings),
                    sampler=sampler, feel_good=feel_good, eta=eta, mu=mu, offline_fraction=offline_fraction,
                    max_queries=max_queries or None,
                    ccft=CCFTConfig(per_category=per_category, epochs=epochs, temperature=temperature, tau=tau))
    spec.validate()
    console.print(f"{env.name}: {env.n_queries} queries x {env.n_models} models; "
                  f"{len(spec.policies)} policies, {len(spec.embeddings)} embeddings, {seeds} seeds x {rounds} rounds")
    result = run_duel(env, spec, jobs=jobs, engine=engine, ray_address=ray_address, cache_dir=cache)
    rows = result.rows()
    table = Table(title=f"{result.dataset}: cumulative regret at T = {rounds} ({seeds} seeds)")
    for col in ("policy", "embeddings", "regret", "weak regret"):
        table.add_column(col, justify="left" if col in ("policy", "embeddings") else "right")
    for r in rows:
        table.add_row(r["policy"], r["embeddings"], f"{r['regret_mean']:.1f} ± {r['regret_std']:.1f}",
                      f"{r['weak_regret_mean']:.1f} ± {r['weak_regret_std']:.1f}")
    console.print(table)
    if result.meta.get("dars_knn", "").startswith("skipped"):
        console.print(f"dars-knn {result.meta['dars_knn']}")
    if json_out is not None:
        write_json(rows, json_out)
        console.print(f"rows: {json_out}")
    if report is not None:
        paths = write_report(result, report)
        console.print(f"report: {paths['regret']}, {paths['table']}")
