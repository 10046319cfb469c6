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
from caproute.cli.params import SEED_DEFAULT, choice, comma_list, finite, float_list, fraction
from caproute.errors import ConfigError
from caproute.supervise.adaptive import BETA_UPDATES, PREDICTIVES, PRIOR_FITS, RULES, AdaptiveConfig
from caproute.supervise.utility import DEFAULT_BETA, DEFAULT_LAMBDA

console = Console()
RULE_NAMES = ("uniform", *(r for r in RULES if r != "uniform"))


@app.command("adaptive-study")
def adaptive_study_cmd(
    store: StoreOpt = None, data: DataOpt = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="dataset (may be omitted when there is one)")] = None,
    budgets: Annotated[list[str] | None, typer.Option(
        "--budgets", help="fractions of the full grid, in (0, 1] (default 0.2,0.3,0.4,0.6,1.0)",
        callback=float_list("--budgets", lo=0.0, hi=1.0, lo_open=True))] = None,
    budget_unit: Annotated[str, typer.Option(
        "--budget-unit", help="generations | cost (fraction of the full grid's raw cost)",
        callback=choice("--budget-unit", ("generations", "cost")))] = "generations",
    policies: Annotated[list[str] | None, typer.Option(
        "--policies", help="allocation rules: uniform (baseline), pob, lucb (default: all three)",
        callback=comma_list)] = None,
    routers: Annotated[list[str] | None, typer.Option(
        "--routers", help="routers trained on each supervision (default knn)", callback=comma_list)] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="replays per (policy, budget): seeds seed..seed+N-1")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="base seed")] = SEED_DEFAULT,
    lam: LambdaOpt = DEFAULT_LAMBDA, beta: BetaOpt = DEFAULT_BETA,
    settle_lambdas: Annotated[list[str] | None, typer.Option(
        "--settle-lambdas", help="settle labels for every lambda in this list (default: --lambda only)",
        callback=float_list("--settle-lambdas", lo=0.0))] = None,
    delta: Annotated[float, typer.Option(
        "--delta", help="stop a query when its label is right with probability >= 1 - delta",
        callback=fraction("--delta"))] = AdaptiveConfig.delta,
    epsilon: Annotated[float, typer.Option(
        "--epsilon", help="indifference zone in utility units", callback=finite("--epsilon", lo=0.0))] = AdaptiveConfig.epsilon,
    min_per_model: Annotated[int, typer.Option(
        "--min-per-model", min=1, help="observations of every model before a query may stop")] = AdaptiveConfig.min_per_model,
    predictive: Annotated[str, typer.Option(
        "--predictive", help="pob: grid (draw the full grid's statistics: beta-binomial predictive of the "
        "unbought observations) | rate (draw the success rate only)",
        callback=choice("--predictive", PREDICTIVES))] = AdaptiveConfig.predictive,
    prior_fit: Annotated[str, typer.Option(
        "--prior-fit", help="pob: fixed (Beta prior) | eb (empirical-Bayes Beta per model, refitted every round)",
        callback=choice("--prior-fit", PRIOR_FITS))] = AdaptiveConfig.prior_fit,
    beta_update: Annotated[str, typer.Option(
        "--beta-update", help="pob, scores inside (0, 1): fractional (count the score) | bernoulli "
        "(count r ~ Bernoulli(score), Agrawal-Goyal)",
        callback=choice("--beta-update", BETA_UPDATES))] = AdaptiveConfig.beta_update,
    features: Annotated[str, typer.Option("--features", help="tfidf | minilm | model2vec")] = "tfidf",
    test_fraction: Annotated[float | None, typer.Option(
        "--test-fraction", help="re-split: fraction of queries used for test (RouterDC-style data)",
        callback=fraction("--test-fraction"))] = None,
    test_decodes: Annotated[int | None, typer.Option(
        "--test-decodes", min=1, help="re-split: observations per pair held out for test")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write rows, summary and references as JSON")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="folder for adaptive.md / .csv / .png")] = None,
) -> None:
    """How much of the K x R grid adaptive allocation needs for DARS-quality supervision."""
    from caproute.core.atomic import write_json
    from caproute.core.runtime import Progress
    from caproute.evaluate.adaptive_report import write_study_report
    from caproute.evaluate.adaptive_study import StudyConfig, run_study
    from caproute.evaluate.bench import resolve_routers
    from caproute.evaluate.protocol import load_experiment
    pol = tuple(policies or RULE_NAMES)
    unknown = sorted(set(pol) - set(RULE_NAMES))
    if unknown:
        raise ConfigError(f"--policies: unknown {unknown} (choose from {', '.join(RULE_NAMES)})")
    adaptive = AdaptiveConfig(lambdas=tuple(settle_lambdas or (lam,)), beta=beta, delta=delta,
                              epsilon=epsilon, min_per_model=min_per_model, predictive=predictive,
                              prior_fit=prior_fit, beta_update=beta_update)
    rts = resolve_routers(",".join(routers or ["knn"]))
    exp = load_experiment(store=store, data=data, dataset=dataset, test_fraction=test_fraction,
                          test_decodes=test_decodes, seed=seed)
    config = StudyConfig(budgets=tuple(budgets or StudyConfig.budgets), policies=pol, routers=rts,
                         seeds=seeds, seed=seed, lam=lam, beta=beta, unit=budget_unit, features=features,
                         adaptive=adaptive)
    console.print(f"[bold]{exp.dataset}[/]: {exp.meta['n_train_queries']} train / "
                  f"{exp.meta['n_test_queries']} test queries, {len(exp.models)} models, "
                  f"full grid {len(exp.train_obs)} generations")
    with Progress("replaying allocation policies", 1, console=console, transient=True) as bar:
        payload = run_study(exp, config, progress=lambda d, t: bar.update(completed=d, total=t))
    table = Table(title=f"{exp.dataset}: adaptive vs uniform allocation ({seeds} seeds)")
    for c in ("policy", "router", "budget", "generations", "label agreement", "utility rewrite", "utility decode"):
        table.add_column(c, justify="left" if c in ("policy", "router") else "right", no_wrap=True)

    def f(r, k):
        v = r.get(k)
        return "n/a" if v is None or v != v else f"{v:.3f}"

    for r in payload["references"] + payload["summary"]:
        table.add_row(r["policy"], r["router"], f"{r['budget_fraction']:.2f}", f"{r['generations']:.0f}",
                      f(r, "label_agreement"), f(r, "utility_rewrite"), f(r, "utility_decode"))
    console.print(table)
    if json_out is not None:
        write_json(payload, json_out)
        console.print(f"json: {json_out}")
    if report is not None:
        console.print(f"report: {write_study_report(payload, report)}")
