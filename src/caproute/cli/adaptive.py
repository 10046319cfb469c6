"""``caproute adaptive-study``: replay adaptive repeated sampling on collected observations; a thin
wrapper over :mod:`caproute.evaluate.adaptive_study`."""

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


def _list(text: str, what: str, cast=str) -> tuple:
    try:
        vals = tuple(cast(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{what}: expected a comma-separated list, got '{text}'") from None
    if not vals:
        raise ConfigError(f"{what}: no values in '{text}'")
    return vals


@app.command("adaptive-study")
def adaptive_study_cmd(
    store: StoreOpt = None, data: DataOpt = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="dataset (may be omitted when there is one)")] = None,
    budgets: Annotated[str, typer.Option(
        "--budgets", help="comma-separated fractions of the full grid")] = "0.2,0.3,0.4,0.6,1.0",
    budget_unit: Annotated[str, typer.Option(
        "--budget-unit", help="generations | cost (fraction of the full grid's raw cost)")] = "generations",
    policies: Annotated[str, typer.Option(
        "--policies", help="allocation rules: uniform (baseline), pob, lucb")] = "uniform,pob,lucb",
    routers: Annotated[str, typer.Option("--routers", help="routers trained on each supervision")] = "knn",
    seeds: Annotated[int, typer.Option("--seeds", help="replays per (policy, budget), seeds seed..seed+N-1")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="base seed")] = 42,
    lam: LambdaOpt = 0.05, beta: BetaOpt = 0.2,
    settle_lambdas: Annotated[str | None, typer.Option(
        "--settle-lambdas", help="settle labels for every lambda in this list (default: --lambda only)")] = None,
    delta: Annotated[float, typer.Option("--delta", help="stop when the label is right with prob >= 1 - delta")] = 0.2,
    epsilon: Annotated[float, typer.Option("--epsilon", help="indifference zone in utility units")] = 0.01,
    min_per_model: Annotated[int, typer.Option("--min-per-model", help="observations of every model before stopping")] = 1,
    features: Annotated[str, typer.Option("--features", help="tfidf | minilm | model2vec")] = "tfidf",
    test_fraction: Annotated[float | None, typer.Option(
        "--test-fraction", help="re-split: fraction of queries used for test (RouterDC-style data)")] = None,
    test_decodes: Annotated[int | None, typer.Option(
        "--test-decodes", help="re-split: observations per pair held out for test")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write rows, summary and references as JSON")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="folder for adaptive.md / .csv / .png")] = None,
) -> None:
    """How much of the K x R grid adaptive allocation needs for DARS-quality supervision."""
    from rich.progress import Progress

    from caproute.data.atomic import write_json
    from caproute.evaluate.adaptive_report import write_study_report
    from caproute.evaluate.adaptive_study import UNITS, StudyConfig, run_study
    from caproute.evaluate.protocol import load_experiment
    from caproute.supervise.adaptive import RULES, AdaptiveConfig

    bud = _list(budgets, "--budgets", float)
    if any(not (0 < b <= 1) for b in bud):
        raise ConfigError(f"--budgets: every budget must be in (0, 1], got '{budgets}'")
    pol = _list(policies, "--policies")
    if set(pol) - set(RULES):
        raise ConfigError(f"--policies: unknown {sorted(set(pol) - set(RULES))} (choose from {', '.join(RULES)})")
    if budget_unit not in UNITS:
        raise ConfigError(f"--budget-unit must be one of {', '.join(UNITS)} (got '{budget_unit}')")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1 (got {seeds})")
    lams = _list(settle_lambdas, "--settle-lambdas", float) if settle_lambdas else (lam,)
    try:
        adaptive = AdaptiveConfig(lambdas=lams, beta=beta, delta=delta, epsilon=epsilon,
                                  min_per_model=min_per_model)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    exp = load_experiment(store=store, data=data, dataset=dataset, test_fraction=test_fraction,
                          test_decodes=test_decodes, seed=seed)
    from caproute.evaluate.bench import resolve_routers

    rts = resolve_routers(routers)
    config = StudyConfig(budgets=bud, policies=pol, routers=rts, seeds=seeds, seed=seed, lam=lam,
                         beta=beta, unit=budget_unit, features=features, adaptive=adaptive)
    console.print(f"[bold]{exp.dataset}[/]: {exp.meta['n_train_queries']} train / "
                  f"{exp.meta['n_test_queries']} test queries, {len(exp.models)} models, "
                  f"full grid {len(exp.train_obs)} generations")
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("replaying allocation policies", total=1)
        payload = run_study(exp, config, progress=lambda d, t: bar.update(task, completed=d, total=t))
    table = Table(title=f"{exp.dataset}: adaptive vs uniform allocation ({seeds} seeds)")
    for c in ("policy", "router", "budget", "generations", "label agreement", "utility rewrite", "utility decode"):
        table.add_column(c, justify="left" if c in ("policy", "router") else "right")

    def f(r, k):
        v = r.get(k)
        return "n/a" if v is None or v != v else f"{v:.3f}"

    for r in payload["references"] + payload["summary"]:
        table.add_row(r["policy"], r["router"], f"{r['budget_fraction']:.2f}",
                      f"{r['generations']:.0f}", f(r, "label_agreement"), f(r, "utility_rewrite"),
                      f(r, "utility_decode"))
    console.print(table)
    if json_out is not None:
        write_json(payload, json_out)
        console.print(f"json: {json_out}")
    if report is not None:
        console.print(f"report: {write_study_report(payload, report)}")
