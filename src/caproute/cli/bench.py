"""``caproute bench``: the paper's experiment (single-shot vs DARS, ablations, K x R, beta,
Pareto, two-model metrics, router variance) on one dataset; a thin wrapper over
:mod:`caproute.evaluate.bench` and :mod:`caproute.evaluate.report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from caproute.cli import app
from caproute.cli.common import BetaOpt, DataOpt, LambdaOpt, StoreOpt
from caproute.errors import ConfigError

console = Console()


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated numbers, got '{text}'") from None
    if not vals:
        raise ConfigError(f"{what}: no values in '{text}'")
    return vals


def _protocols(text: str | None) -> tuple[tuple[int, int], ...] | None:
    if text is None:
        return None
    out = []
    for part in text.split(","):
        try:
            k, r = part.lower().split("x")
            out.append((int(k), int(r)))
        except ValueError:
            raise ConfigError(f"--kxr: expected protocols like 1x1,3x3,5x5, got '{part}'") from None
    return tuple(out)


def _counts(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, n = part.partition("=")
        try:
            out[name.strip()] = int(n)
        except ValueError:
            raise ConfigError(f"--router-runs: expected NAME=COUNT, got '{part}'") from None
    return out


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(s.strip() for s in text.split(",") if s.strip())


@app.command("bench")
def bench_cmd(
    store: StoreOpt = None, data: DataOpt = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="dataset name, a comma-separated list or 'all' (several are pooled into one); "
                          "may be omitted when the data holds one dataset")] = None,
    routers: Annotated[str, typer.Option(
        "--routers", help="'all', 'families' (the paper's seven) or comma-separated router names")] = "all",
    single_shot_runs: Annotated[int, typer.Option("--single-shot-runs", help="single-shot training sets")] = 100,
    router_runs: Annotated[str | None, typer.Option(
        "--router-runs", help="per-router single-shot sets, e.g. mlp=20,rmsoftmax=20 (default: --single-shot-runs)")] = None,
    lam: LambdaOpt = 0.05, beta: BetaOpt = 0.2,
    features: Annotated[str, typer.Option("--features", help="tfidf | minilm | model2vec")] = "tfidf",
    jobs: Annotated[int, typer.Option("--jobs", help="parallel worker processes (results do not depend on it)")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="base seed (single-shot run r uses seed + r)")] = 42,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result rows as JSON")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="report folder (markdown, CSV, PNG, HTML)")] = None,
    engine: Annotated[str, typer.Option("--engine", help="local | ray")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster address")] = None,
    studies: Annotated[str, typer.Option(
        "--studies", help="comma-separated: main (always), ablation, kxr, beta")] = "main,ablation,kxr,beta",
    study_routers: Annotated[str | None, typer.Option(
        "--study-routers", help="routers of the ablation, K x R and beta studies (default: all non-baselines)")] = None,
    kxr: Annotated[str | None, typer.Option(
        "--kxr", help="K x R protocols, e.g. 1x1,1x3,3x1,2x2,3x3,5x5 (the default; clamped to the data)")] = None,
    kxr_subsamples: Annotated[int, typer.Option("--kxr-subsamples", help="random subsamples per protocol")] = 10,
    betas: Annotated[str | None, typer.Option(
        "--betas", help="beta grid (default 0,0.02,0.05,0.1,0.15,0.2,0.3,0.5)")] = None,
    lambdas: Annotated[str | None, typer.Option(
        "--lambdas", help="lambda grid of the Pareto sweep (default 0,0.01,0.02,0.05,0.1,0.2,0.5,1)")] = None,
    pair: Annotated[str | None, typer.Option(
        "--pair", help="STRONG,WEAK models for APGR/CPT (default: best by training quality, cheapest other)")] = None,
    test_fraction: Annotated[float | None, typer.Option(
        "--test-fraction", help="re-split: fraction of each dataset's queries used for test")] = None,
    test_decodes: Annotated[int | None, typer.Option(
        "--test-decodes", help="re-split: observations per (query, model) pair held out for test")] = None,
    title: Annotated[str | None, typer.Option("--title", help="report title")] = None,
) -> None:
    """Train every router single-shot (N resampled sets) and with DARS; score on the test views."""
    from caproute.data.atomic import write_json
    from caproute.evaluate.bench import DEFAULT_BETAS, DEFAULT_KXR, DEFAULT_LAMBDAS, BenchConfig, run_bench
    from caproute.evaluate.protocol import load_experiment
    from caproute.evaluate.report import console_table1, write_report

    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be local or ray (got '{engine}')")
    pair_names = _names(pair)
    if pair_names is not None and len(pair_names) != 2:
        raise ConfigError(f"--pair needs two models STRONG,WEAK (got '{pair}')")
    config = BenchConfig(
        routers=routers, single_shot_runs=single_shot_runs, runs_by_router=_counts(router_runs),
        lam=lam, beta=beta, seed=seed, features=features,
        studies=_names(studies) or ("main",), study_routers=_names(study_routers),
        kxr_protocols=_protocols(kxr) or DEFAULT_KXR, kxr_subsamples=kxr_subsamples,
        betas=_floats(betas, "--betas") or DEFAULT_BETAS, lambdas=_floats(lambdas, "--lambdas") or DEFAULT_LAMBDAS,
        pair=pair_names, jobs=jobs, engine=engine, ray_address=ray_address)
    config.validate()
    exp = load_experiment(store=store, data=data, dataset=dataset, test_fraction=test_fraction,
                          test_decodes=test_decodes, seed=seed)
    console.print(f"[bold]{exp.dataset}[/]: {exp.meta['n_train_queries']} train / {exp.meta['n_test_queries']} "
                  f"test queries, {len(exp.models)} models, views {', '.join(exp.views)}")
    res = run_bench(exp, config, cache=True)   # frozen encoders (MiniLM) reuse the on-disk feature cache
    t1 = console_table1(res)
    table = Table(title=f"{exp.dataset}: test utility, single-shot ({config.single_shot_runs} runs) vs DARS "
                        f"(lambda={lam}, beta={beta})")
    for c in t1.columns:
        table.add_column(str(c), justify="left" if c == "Router" else "right", no_wrap=c == "Router")
    for row in t1.itertuples(index=False):
        table.add_row(*[str(x) for x in row])
    console.print(table)
    if json_out is not None:
        write_json(res.json_rows(), json_out)
        console.print(f"rows: {json_out}")
    if report is not None:
        write_report(res, report, title=title)
        console.print(f"report: {report}/report.md, {report}/report.html")
