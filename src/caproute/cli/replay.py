"""``caproute replay``: off-policy evaluation of saved routers on a request log (no subcommand),
and ``caproute replay simulate``: the same estimators checked against the truth of a full grid
(docs/replay.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from caproute.cli import app
from caproute.cli.common import DataOpt, StoreOpt
from caproute.cli.params import SEED_DEFAULT, comma_list, finite, joined, path_list, split_list

console = Console()

replay_app = typer.Typer(
    invoke_without_command=True,
    help="Off-policy replay: evaluate saved routers on a request log (no subcommand), or `simulate` on a grid.",
)
app.add_typer(replay_app, name="replay")

OutcomeOpt = Annotated[str, typer.Option("--outcome", help="DR outcome model: mixed | ridge | knn")]
FoldsOpt = Annotated[int, typer.Option("--folds", min=2, help="cross-fitting folds of the DR outcome model")]
BootOpt = Annotated[int, typer.Option("--bootstrap", min=10, help="bootstrap resamples of the intervals")]
AlphaOpt = Annotated[float, typer.Option("--alpha", help="intervals at level 1 - alpha",
                                         callback=finite("--alpha", lo=0.0, hi=1.0, lo_open=True))]


def _f(x) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"


@replay_app.callback()
def replay_cmd(
    ctx: typer.Context,
    log: Annotated[Path | None, typer.Option("--log", help="request log, JSONL or Parquet (docs/replay.md)")] = None,
    candidate: Annotated[list[Path] | None, typer.Option(
        "--candidate", help="saved router folder (caproute train --out); comma list or repeated",
        callback=path_list)] = None,
    outcome: OutcomeOpt = "mixed",
    folds: FoldsOpt = 5,
    bootstrap: BootOpt = 1000,
    alpha: AlphaOpt = 0.05,
    seed: Annotated[int, typer.Option("--seed", help="seed of the folds and the bootstrap")] = SEED_DEFAULT,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the rows {candidate, estimator, value, "
                                                                 "ci_low, ci_high, ess, n} as JSON")] = None,
    png: Annotated[Path | None, typer.Option("--png", help="plot of the estimates against the logging policy")] = None,
) -> None:
    """Estimate each candidate router's mean reward from a request log: IPS, self-normalised IPS
    and doubly robust (cross-fitted outcome model), bootstrap intervals, effective sample size.
    A candidate that chooses models the log never could have served is refused by name."""
    if ctx.invoked_subcommand is not None:
        return
    from caproute.core.atomic import write_json
    from caproute.errors import ConfigError
    from caproute.evaluate.replay import load_candidates, plot_replay, replay_log
    from caproute.evaluate.replay_log import read_request_log

    if log is None or not candidate:
        raise ConfigError("caproute replay needs --log LOG and at least one --candidate DIR "
                          "(or the subcommand `simulate`)")
    rl = read_request_log(log)
    cands = load_candidates(candidate)
    res = replay_log(rl, cands, outcome=outcome, folds=folds, n_boot=bootstrap, alpha=alpha, seed=seed)
    table = Table(title=f"{log.name}: {rl.n} requests, {len(rl.models)} models; logging policy observed mean "
                        f"{res.observed.value:.3f} [{res.observed.ci_low:.3f}, {res.observed.ci_high:.3f}]",
                  caption=f"{int(100 * (1 - alpha))}% intervals: IPS/SNIPS percentile bootstrap over requests "
                          f"({bootstrap} resamples), DR influence-function normal; "
                          f"DR outcome model: {outcome}, {folds}-fold cross-fitted")
    for col in ("candidate", "estimator", "value", "interval", "ESS", "n"):
        table.add_column(col, justify="left" if col in ("candidate", "estimator") else "right")
    for r in res.records():
        table.add_row(r["candidate"], r["estimator"], _f(r["value"]), f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]",
                      f"{r['ess']:.1f}", str(r["n"]))
    console.print(table)
    for why in res.refused.values():
        console.print(f"[bold yellow]refused:[/] {why}", highlight=False, soft_wrap=True)
    if res.rows.empty:
        raise ConfigError("no candidate could be evaluated from this log (see the refusals above)")
    if json_out is not None:
        write_json(res.records(), json_out)
        console.print(f"rows: {json_out}")
    if png is not None:
        plot_replay(res.rows, res.observed, png)
        console.print(f"plot: {png}")


@replay_app.command("simulate")
def simulate_cmd(
    store: StoreOpt = None,
    data: DataOpt = None,
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", help="dataset name, comma-separated list (pooled), or 'all'", callback=comma_list)] = None,
    explore: Annotated[float, typer.Option("--explore", help="epsilon of the logging router's epsilon-greedy "
                                                               "exploration", callback=finite("--explore", lo=0.0, hi=1.0))] = 0.1,
    requests: Annotated[int, typer.Option("--requests", min=10, help="logged requests per seed")] = 3000,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="simulated logs (traffic seeds)")] = 20,
    logger: Annotated[str, typer.Option("--logger", help="router family of the logging policy")] = "avengerspro",
    candidates: Annotated[list[str], typer.Option(
        "--candidates", help="router families to evaluate (comma list)", callback=comma_list)
    ] = ("knn,embedllm,mirt,best_fixed",),
    retrain: Annotated[list[str], typer.Option(
        "--retrain", help="families retrained from the log alone: knn, knn-imputed, knn-partial, ridge "
                              "(comma list; 'none' for none)", callback=comma_list)] = ("knn,knn-imputed,knn-partial,ridge",),
    outcome: Annotated[list[str], typer.Option(
        "--outcome", help="DR outcome models, the first is 'dr' (comma list: mixed, ridge, knn)",
        callback=comma_list)] = ("mixed,ridge",),
    test_fraction: Annotated[float | None, typer.Option(
        "--test-fraction", help="re-split queries: this fraction of each dataset is the traffic (default: the "
                                "data's own train/test split)", callback=finite("--test-fraction", lo=0.0, hi=1.0))] = None,
    folds: FoldsOpt = 5,
    bootstrap: BootOpt = 1000,
    alpha: AlphaOpt = 0.05,
    kappa: Annotated[float, typer.Option("--kappa", help="pessimism of the retrained routers: route by "
                                                         "prediction - kappa * standard error",
                                         callback=finite("--kappa", lo=0.0))] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="seed of the split, the routers and the traffic")] = SEED_DEFAULT,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="parallel processes over seeds")] = 1,
    json_out: Annotated[Path | None, typer.Option("--json", help="write meta, summary and per-seed rows as JSON")] = None,
    png: Annotated[Path | None, typer.Option("--png", help="plot of one seed's estimates against the truth")] = None,
) -> None:
    """The full grid of a DARS-format dataset as the environment: a logging router with
    epsilon-greedy exploration routes the traffic, each request sees one observation of the chosen
    model; per candidate router, the replay estimates against its true utility on the grid over
    seeds (coverage, bias, MAE), and routers retrained from the log alone."""
    from caproute.core.atomic import write_json
    from caproute.evaluate.replay import plot_replay
    from caproute.evaluate.replay_sim import SimulationConfig, load_environment, run_simulation

    ret = tuple(r for r in split_list(retrain) if r != "none")
    config = SimulationConfig(candidates=tuple(split_list(candidates)), logger=logger, explore=explore,
                              requests=requests, seeds=seeds, seed=seed, outcome=tuple(split_list(outcome)),
                              retrain=ret, folds=folds, n_boot=bootstrap, alpha=alpha, kappa=kappa)
    config.validate()
    env = load_environment(store=store, data=data, dataset=joined(dataset), test_fraction=test_fraction, seed=seed)
    console.print(f"{env.name}: {env.n_queries} traffic queries x {len(env.models)} models "
                  f"({env.meta['observations_per_pair']:.1f} observations per pair), "
                  f"{env.meta['n_train_queries']} training queries; logger {logger}, epsilon {explore}, "
                  f"{requests} requests x {seeds} seeds", highlight=False)
    res = run_simulation(env, config, jobs=jobs, progress=console.is_terminal)
    table = Table(title=f"{env.name}: replay estimates vs true utility U = q - {env.lam:g}·c over {seeds} seeds")
    for col in ("candidate", "estimator", "truth", "mean est.", "bias", "MAE", "coverage", "width", "ESS", "agree"):
        table.add_column(col, justify="left" if col in ("candidate", "estimator") else "right")
    for r in res.summary.to_dict("records"):
        table.add_row(r["candidate"], r["estimator"], _f(r.get("truth")), _f(r.get("estimate")), _f(r.get("bias")),
                      _f(r.get("mae")), _f(r.get("coverage")), _f(r.get("width")), _f(r.get("ess")),
                      _f(r.get("agreement")))
    console.print(table)
    if len(res.retrained_summary):
        t2 = Table(title="routers retrained from the log alone vs the same family on the full grid")
        for col in ("family", "retrained (mean ± sd)", "full grid", "gap"):
            t2.add_column(col, justify="left" if col == "family" else "right")
        for r in res.retrained_summary.to_dict("records"):
            t2.add_row(r["family"], f"{r['retrained']:.3f} ± {0 if r['retrained_std'] != r['retrained_std'] else r['retrained_std']:.3f}",
                       _f(r["full_grid"]), f"{r['gap']:+.3f}")
        console.print(t2)
    if json_out is not None:
        write_json(res.to_dict(), json_out)
        console.print(f"results: {json_out}")
    if png is not None:
        first = res.rows[(res.rows["seed"] == 0) & (res.rows["estimator"] != "observed")]
        obs = res.rows[(res.rows["seed"] == 0) & (res.rows["estimator"] == "observed")]
        from caproute.evaluate.offpolicy import Estimate

        o = obs.iloc[0] if len(obs) else None
        observed = Estimate("observed", o["value"], o["ci_low"], o["ci_high"], o["ess"], int(o["n"])) if o is not None else None
        truth = dict(zip(first["candidate"], first["truth"], strict=False))
        plot_replay(first, observed, png, truth=truth, title=f"{env.name}: seed 0 estimates vs the truth")
        console.print(f"plot: {png}")
