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
from caproute.cli.common import BetaOpt, DataOpt, DeviceOpt, LambdaOpt, StoreOpt
from caproute.cli.params import comma_list, fraction, joined
from caproute.core.configfile import parse_pairs, split_pair
from caproute.errors import ConfigError
from caproute.supervise.utility import DEFAULT_BETA, DEFAULT_LAMBDA

console = Console()


def _floats(text: str | list[str] | None, what: str) -> tuple[float, ...] | None:
    text = joined(text)
    if text is None:
        return None
    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated numbers, got '{text}'") from None
    if not vals:
        raise ConfigError(f"{what}: no values in '{text}'")
    return vals


def _protocols(text: str | list[str] | None) -> tuple[tuple[int, int], ...] | None:
    text = joined(text)
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


def _counts(text: str | list[str] | None) -> dict[str, int]:
    text = joined(text)
    out: dict[str, int] = {}
    for name, n in parse_pairs((text or "").split(","), option="--router-runs", expected="NAME=COUNT"):
        try:
            out[name] = int(n)
        except ValueError:
            raise ConfigError(f"--router-runs '{name}={n}': expected NAME=COUNT") from None
    return out


def _names(text: str | list[str] | None) -> tuple[str, ...] | None:
    text = joined(text)
    return None if text is None else tuple(s.strip() for s in text.split(",") if s.strip())


def _router_params(items: list[str] | None) -> dict[str, dict]:
    """``--param ROUTER.NAME=VALUE`` (repeatable) -> {router: {name: value}}; names and values are
    checked by the shared parser (:func:`caproute.cli.params.parse_params`) against the router's
    defaults, as ``caproute train --param`` does."""
    from caproute.cli.params import parse_params
    from caproute.routers.pipeline import make_router

    per: dict[str, list[str]] = {}
    for item in items or []:
        key, _ = split_pair(item, option="--param", expected="ROUTER.NAME=VALUE, e.g. mlp.max_iter=200")
        router, dot, name = key.partition(".")
        if not dot or not router or not name.strip():
            raise ConfigError(f"--param '{item}': expected ROUTER.NAME=VALUE, e.g. mlp.max_iter=200")
        per.setdefault(router.strip(), []).append(item.partition(".")[2])
    return {router: parse_params(vals, make_router(router).get_params(), option="--param",
                                 owner=f"router '{router}'") for router, vals in per.items()}


@app.command("bench")
def bench_cmd(
    store: StoreOpt = None, data: DataOpt = None,
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", help="dataset name, a comma-separated list or 'all' (several are pooled into one); "
                          "may be omitted when the data holds one dataset", callback=comma_list)] = None,
    routers: Annotated[list[str], typer.Option(
        "--routers", help="'all', 'families' (the paper's seven) or comma-separated router names",
        callback=comma_list)] = ("all",),
    single_shot_runs: Annotated[int, typer.Option("--single-shot-runs", help="single-shot training sets")] = 100,
    dars_runs: Annotated[int, typer.Option(
        "--dars-runs", help="DARS trainings per router (seeds seed + run; one for routers without a seed)")] = 5,
    router_runs: Annotated[list[str] | None, typer.Option(
        "--router-runs", help="per-router single-shot sets, e.g. mlp=20,rmsoftmax=20 (default: --single-shot-runs)", callback=comma_list)] = None,
    lam: LambdaOpt = DEFAULT_LAMBDA, beta: BetaOpt = DEFAULT_BETA,
    features: Annotated[str, typer.Option("--features", help="tfidf | minilm | model2vec")] = "tfidf",
    jobs: Annotated[int, typer.Option("--jobs", help="parallel worker processes (results do not depend on it)")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="base seed (single-shot run r uses seed + r)")] = 42,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result rows as JSON")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="report folder (markdown, CSV, PNG, HTML)")] = None,
    engine: Annotated[str, typer.Option("--engine", help="local | ray")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster address")] = None,
    studies: Annotated[list[str], typer.Option(
        "--studies", help="comma-separated: main (always), ablation, kxr, beta, pareto, pair",
        callback=comma_list)] = ("main,ablation,kxr,beta,pareto,pair",),
    param: Annotated[list[str] | None, typer.Option(
        "--param", metavar="ROUTER.NAME=VALUE", help="router hyper-parameter ROUTER.NAME=VALUE (repeatable), e.g. mlp.max_iter=200")] = None,
    predictions: Annotated[bool, typer.Option(
        "--predictions/--no-predictions", help="per-query predictions (run 0) in the report folder")] = True,
    study_routers: Annotated[list[str] | None, typer.Option(
        "--study-routers", help="routers of the ablation, K x R and beta studies (default: all non-baselines)", callback=comma_list)] = None,
    kxr: Annotated[list[str] | None, typer.Option(
        "--kxr", help="K x R protocols, e.g. 1x1,1x3,3x1,2x2,3x3,5x5 (the default; clamped to the data)", callback=comma_list)] = None,
    kxr_subsamples: Annotated[int, typer.Option("--kxr-subsamples", help="random subsamples per protocol")] = 10,
    betas: Annotated[list[str] | None, typer.Option(
        "--betas", help="beta grid (default 0,0.02,0.05,0.1,0.15,0.2,0.3,0.5)", callback=comma_list)] = None,
    lambdas: Annotated[list[str] | None, typer.Option(
        "--lambdas", help="lambda grid of the Pareto sweep (default 0,0.01,0.02,0.05,0.1,0.2,0.5,1)", callback=comma_list)] = None,
    pair: Annotated[list[str] | None, typer.Option(
        "--pair", help="STRONG,WEAK models for APGR/CPT (default: best by training quality, cheapest other)", callback=comma_list)] = None,
    test_fraction: Annotated[float | None, typer.Option(
        "--test-fraction", help="re-split: fraction of each dataset's queries used for test",
        callback=fraction("--test-fraction"))] = None,
    test_decodes: Annotated[int | None, typer.Option(
        "--test-decodes", help="re-split: observations per (query, model) pair held out for test")] = None,
    title: Annotated[str | None, typer.Option("--title", help="report title")] = None,
    device: DeviceOpt = None,
) -> None:
    """Train every router single-shot (N resampled sets) and with DARS; score on the test views."""
    from caproute.core.device import set_default_device

    set_default_device(device)   # before workers start: they inherit $CAPROUTE_DEVICE
    from caproute.core.atomic import write_json
    from caproute.evaluate.bench import DEFAULT_BETAS, DEFAULT_KXR, DEFAULT_LAMBDAS, BenchConfig, run_bench
    from caproute.evaluate.protocol import load_experiment
    from caproute.evaluate.report import console_table1, write_report

    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be local or ray (got '{engine}')")
    pair_names = _names(pair)
    if pair_names is not None and len(pair_names) != 2:
        raise ConfigError(f"--pair needs two models STRONG,WEAK (got '{joined(pair)}')")
    config = BenchConfig(
        routers=joined(routers) or "all", single_shot_runs=single_shot_runs, runs_by_router=_counts(router_runs),
        dars_runs=dars_runs, router_params=_router_params(param), predictions=predictions,
        lam=lam, beta=beta, seed=seed, features=features,
        studies=_names(studies) or ("main",), study_routers=_names(study_routers),
        kxr_protocols=_protocols(kxr) or DEFAULT_KXR, kxr_subsamples=kxr_subsamples,
        betas=_floats(betas, "--betas") or DEFAULT_BETAS, lambdas=_floats(lambdas, "--lambdas") or DEFAULT_LAMBDAS,
        pair=pair_names, jobs=jobs, engine=engine, ray_address=ray_address)
    config.validate()
    exp = load_experiment(store=store, data=data, dataset=joined(dataset), test_fraction=test_fraction,
                          test_decodes=test_decodes, seed=seed)
    console.print(f"[bold]{exp.dataset}[/]: {exp.meta['n_train_queries']} train / {exp.meta['n_test_queries']} "
                  f"test queries, {len(exp.models)} models, views {', '.join(exp.views)}")
    from caproute.supervise.coverage import Coverage

    coverage = Coverage.from_dict(exp.meta["train_coverage"])
    if not coverage.complete:    # partial training grid: unobserved pairs are masked out of training
        console.print(f"training {coverage.summary()}")
    res = run_bench(exp, config, cache=True)   # frozen encoders (MiniLM) reuse the on-disk feature cache
    t1 = console_table1(res)
    table = Table(title=f"{exp.dataset}: test utility, single-shot ({config.single_shot_runs} runs) vs DARS "
                        f"({config.dars_runs} runs) (lambda={lam}, beta={beta})")
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
    sig = res.significance
    if not sig.empty:
        for r in sig[sig["view"] == res.views[-1]].itertuples(index=False):
            console.print(f"  {r.router}: DARS - single-shot {r.diff:+.3f} ({r.test}, p = {r.p_value:.3g}): {r.verdict}")
