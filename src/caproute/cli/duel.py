"""``caproute duel``: dueling-feedback routing experiments (FGTS.CDB vs baselines), and
``caproute duel init``: a policy ready for ``caproute serve --duel-policy DIR``.

``caproute duel`` is a command group that runs the experiment when no subcommand is given, so
``caproute duel --data ... --rounds ...`` works as before."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from caproute.bandits.defaults import DEFAULT_DUEL_LAMBDA
from caproute.bandits.defaults import DEFAULTS as FGTS_DEFAULTS
from caproute.cli import app
from caproute.cli.common import DataOpt, DeviceOpt, StoreOpt
from caproute.cli.params import SEED_DEFAULT, comma_list, deprecated_alias, finite, joined, split_list

console = Console()

duel_app = typer.Typer(
    invoke_without_command=True,
    help="Dueling-feedback routing: the FGTS.CDB experiment (no subcommand), or `init` a servable policy.",
)
app.add_typer(duel_app, name="duel")


# the PROPOSED warm-start prior of FGTS.CDB (caproute.bandits.prior), for the experiment and for `init`
OfflinePriorOpt = Annotated[bool, typer.Option(
    "--offline-prior/--no-offline-prior",
    help="fgts-cdb starts from a prior fitted on the scored offline queries (the offline split; for init, "
         "every query of the data) instead of the paper's N(0, I) (PROPOSED, see docs/bandits.md)")]
PriorWeightOpt = Annotated[float, typer.Option(
    "--prior-weight", help="--offline-prior: duels one offline query counts as")]
# one default set for FGTS.CDB (caproute.bandits.defaults.DEFAULTS), the same for the experiment and `init`
SamplerOpt = Annotated[str, typer.Option(
    "--sampler", help="FGTS.CDB posterior sampler: sgld (the paper's) | laplace (fast approximation, an option)")]
FeelGoodOpt = Annotated[str, typer.Option(
    "--feel-good", help="Laplace sampler's feel-good term: importance (the third-party recipe) | tilt (PROPOSED)")]
EtaOpt = Annotated[float, typer.Option(
    "--eta", help="likelihood temperature eta (default 0.25: the value attributed to the paper; "
                  "other values temper the likelihood, an option)")]
MuOpt = Annotated[float | None, typer.Option(
    "--mu", help="feel-good weight (default 1/sqrt(T), PROPOSED; 0 switches the feel-good term off: "
                 "dueling Thompson sampling, not FGTS.CDB)")]
ArmResidualOpt = Annotated[float, typer.Option(
    "--arm-residual", help="weight gamma of the per-model arm component that makes tied arms distinct "
                           "(default 0 = the paper's CCFT embeddings; 0.5 = PROPOSED option; docs/bandits.md)")]


def _split(value: str | list[str] | None) -> tuple[str, ...]:
    return tuple(split_list(value))


PER_SEED = "per-seed"


def _split_seed(value: str) -> str:
    """``--split-seed``: an integer >= 0, or 'per-seed' (seed s gets split seed s)."""
    if value != PER_SEED and not (value.isdigit() and value.isascii()):
        raise typer.BadParameter(f"must be an integer >= 0 or '{PER_SEED}', got '{value}'",
                                 param_hint="'--split-seed'")
    return value


@duel_app.callback()
def duel_cmd(
    ctx: typer.Context,
    store: StoreOpt = None,
    data: DataOpt = None,
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", help="dataset name, comma-separated list, or 'all' (default: all; several "
                          "datasets = one category each)", callback=comma_list)] = None,
    policy: Annotated[list[str], typer.Option(
        "--policy", help="comma-separated: fgts-cdb, uniform, best-fixed, eps-greedy, maxinp, dars-knn",
        callback=comma_list)
    ] = ("fgts-cdb,uniform,best-fixed,eps-greedy,maxinp,dars-knn",),
    embeddings: Annotated[list[str], typer.Option(
        "--embeddings", help="comma-separated: {ccft,minilm}-{perf,perf-cost,excel-perf-cost,excel-mask}, "
                             "ccft, minilm", callback=comma_list)] = ("ccft-excel-perf-cost,minilm",),
    rounds: Annotated[int, typer.Option("--rounds", help="rounds T per seed")] = 2000,
    seeds: Annotated[int, typer.Option("--seeds", help="number of seeds (streams 42 + s)")] = 5,
    first_seed: Annotated[int, typer.Option(
        "--first-seed", min=0, help="run seeds s = first, ..., first + seeds - 1 (query stream and policy "
                                    "seed; docs/results-dueling.md reports 0.. and tunes on 1000..)")] = 0,
    split_seed: Annotated[str, typer.Option(
        "--split-seed", callback=_split_seed,
        help="seed of the offline/online split and of the CCFT fit: an integer (every seed shares it) or "
             f"'{PER_SEED}' (seed s gets split s: the protocol of docs/results-dueling.md)")] = "0",
    subsample_seed: Annotated[int, typer.Option(
        "--subsample-seed", min=0, help="seed of the --max-queries subsample (the query pool; fixed while "
                                        "the split varies)")] = 0,
    jobs: Annotated[int, typer.Option("--jobs", help="parallel processes")] = 1,
    engine: Annotated[str, typer.Option("--engine", help="local | ray")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result rows as JSON")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="directory for PNG curves, table, metadata")] = None,
    sampler: SamplerOpt = FGTS_DEFAULTS.sampler,
    feel_good: FeelGoodOpt = FGTS_DEFAULTS.feel_good,
    eta: EtaOpt = FGTS_DEFAULTS.eta,
    mu: MuOpt = FGTS_DEFAULTS.mu,
    lam: Annotated[float, typer.Option(
        "--lambda", help="cost weight lambda in r* = score - lambda * normalised cost (PROPOSED 1; the duel's "
                         "own lambda, not DARS's 0.05)", callback=finite("--lambda", lo=0.0))] = DEFAULT_DUEL_LAMBDA,
    lam_old: Annotated[float | None, typer.Option(
        "--lambda-c", hidden=True, help="deprecated: --lambda",
        callback=deprecated_alias("--lambda-c", "--lambda", finite("--lambda-c", lo=0.0)))] = None,
    scale: Annotated[float, typer.Option("--scale", help="Bradley-Terry scale s")] = 0.1,
    label: Annotated[str, typer.Option("--label", help="pairwise data: human | gpt35 | pandalm7b")] = "human",
    max_queries: Annotated[int, typer.Option("--max-queries", help="subsample queries (0 = all)")] = 1500,
    offline_fraction: Annotated[float, typer.Option("--offline-fraction")] = 0.2,
    epochs: Annotated[int, typer.Option("--ccft-epochs")] = 2,
    per_category: Annotated[int, typer.Option("--ccft-per-category")] = 5,
    temperature: Annotated[float, typer.Option("--temperature", help="softmax temperature of the weightings")] = 1.0,
    tau: Annotated[int, typer.Option("--tau", help="top-tau of the Excel weightings")] = 3,
    arm_residual: ArmResidualOpt = FGTS_DEFAULTS.arm_residual,
    offline_prior: OfflinePriorOpt = False,
    prior_weight: PriorWeightOpt = 1.0,
    cache: Annotated[Path | None, typer.Option("--cache", help="cache for CCFT encoders and embeddings")] = None,
    device: DeviceOpt = None,
) -> None:
    """Contextual dueling bandit: all policies on the same query streams and seeds; regret curves.

    Subcommand `init` builds a policy for `caproute serve --duel-policy DIR` instead."""
    from caproute.core.device import set_default_device

    set_default_device(device)   # CCFT fine-tuning (also for `init`)
    if ctx.invoked_subcommand is not None:
        return
    from caproute.bandits.embeddings import CCFTConfig
    from caproute.bandits.environment import load_environment
    from caproute.bandits.experiment import DuelSpec, run_duel
    from caproute.bandits.report import write_report
    from caproute.core.atomic import write_json

    lam = lam if lam_old is None else lam_old
    env = load_environment(store=store, data=data, dataset=joined(dataset), lam=lam, scale=scale, label=label)
    per_seed = split_seed == PER_SEED
    spec = DuelSpec(rounds=rounds, seeds=seeds, first_seed=first_seed, split_seed=0 if per_seed else int(split_seed),
                    split_per_seed=per_seed, subsample_seed=subsample_seed,
                    policies=_split(policy), embeddings=_split(embeddings),
                    sampler=sampler, feel_good=feel_good, eta=eta, mu=mu, offline_fraction=offline_fraction,
                    max_queries=max_queries or None, offline_prior=offline_prior, prior_weight=prior_weight,
                    ccft=CCFTConfig(per_category=per_category, epochs=epochs, temperature=temperature, tau=tau,
                                    residual=arm_residual))
    spec.validate()
    console.print(f"{env.name}: {env.n_queries} queries x {env.n_models} models; "
                  f"{len(spec.policies)} policies, {len(spec.embeddings)} embeddings, {seeds} seeds x {rounds} rounds")
    result = run_duel(env, spec, jobs=jobs, engine=engine, ray_address=ray_address, cache_dir=cache)
    rows = result.rows()
    for sp in result.meta.get("splits", [result.meta]):      # per-seed splits: one block per seed
        at = "" if "seed" not in sp else f"seed {sp['seed']}: "
        console.print(f"{at}split seed {sp['split_seed']} (subsample seed {subsample_seed}): "
                      f"{sp['n_offline']} offline / {sp['n_online']} online queries", highlight=False)
        for name, a in sp["arms"].items():
            console.print(f"{at}arms [{name}]: {a['distinct']} distinct of {a['K']}, rank {a['rank']}"
                          + (f"; tied: {a['tied']}" if a["tied"] else ""), markup=False, highlight=False)
    console.print(spec.settings_line(), markup=False, highlight=False, soft_wrap=True)
    table = Table(title=f"{result.dataset}: cumulative regret at T = {rounds} ({seeds} seeds)",
                  caption=spec.settings_line())
    for col in ("policy", "embeddings", "regret", "weak regret", "per round, last 20%", "greedy router"):
        table.add_column(col, justify="left" if col in ("policy", "embeddings") else "right")
    for r in rows:
        greedy = f"{r['greedy_late_mean']:.3f}" if "greedy_late_mean" in r else "-"
        table.add_row(r["method"], r["embeddings"], f"{r['regret_mean']:.1f} ± {r['regret_std']:.1f}",
                      f"{r['weak_regret_mean']:.1f} ± {r['weak_regret_std']:.1f}",
                      f"{r['late_per_round_mean']:.3f}", greedy)
    console.print(table)
    if result.meta.get("dars_knn", "").startswith("skipped"):
        console.print(f"dars-knn {result.meta['dars_knn']}")
    if json_out is not None:
        write_json(rows, json_out)
        console.print(f"rows: {json_out}")
    if report is not None:
        paths = write_report(result, report)
        console.print(f"report: {paths['regret']}, {paths['table']}")


@duel_app.command("init")
def duel_init_cmd(
    out: Annotated[Path, typer.Option("--out", help="policy directory to create (for serve --duel-policy)")],
    store: StoreOpt = None,
    data: DataOpt = None,
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", help="dataset name, comma-separated list, or 'all' (default: all)", callback=comma_list)] = None,
    models: Annotated[list[str] | None, typer.Option(
        "--models", help="comma-separated arms (default: every model of the data)", callback=comma_list)] = None,
    embeddings: Annotated[str, typer.Option(
        "--embeddings", help="{ccft,minilm}-{perf,perf-cost,excel-perf-cost,excel-mask}, ccft or minilm")
    ] = "ccft-excel-perf-cost",
    policy: Annotated[str, typer.Option("--policy", help="fgts-cdb | uniform | eps-greedy | maxinp")] = "fgts-cdb",
    sampler: SamplerOpt = FGTS_DEFAULTS.sampler,
    feel_good: FeelGoodOpt = FGTS_DEFAULTS.feel_good,
    eta: EtaOpt = FGTS_DEFAULTS.eta,
    mu: MuOpt = FGTS_DEFAULTS.mu,
    horizon: Annotated[int, typer.Option("--horizon", help="expected rounds T (feel-good weight 1/sqrt(T))")
                       ] = FGTS_DEFAULTS.horizon,
    arm_residual: ArmResidualOpt = FGTS_DEFAULTS.arm_residual,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = SEED_DEFAULT,
    label: Annotated[str, typer.Option("--label", help="pairwise data: human | gpt35 | pandalm7b")] = "human",
    offline_prior: OfflinePriorOpt = False,
    prior_weight: PriorWeightOpt = 1.0,
    cache: Annotated[Path | None, typer.Option("--cache", help="cache for CCFT encoders and embeddings")] = None,
    allow_same: Annotated[bool, typer.Option(
        "--allow-same/--no-allow-same", help="let a served duel pair a model with itself (the paper's FGTS.CDB); by default "
                             "the second model is the best other one of the second posterior sample")] = False,
) -> None:
    """Build a dueling policy (arms = CCFT model embeddings from the offline observations, the query
    encoder, the arm list) ready for `caproute serve --duel-policy OUT`."""
    from caproute.bandits.lifecycle import init_policy

    names = list(_split(models)) if models else None
    rep = init_policy(out, store=store, data=data, dataset=joined(dataset), models=names, embeddings=embeddings,
                      policy=policy, sampler=sampler, feel_good=feel_good, eta=eta, mu=mu, horizon=horizon,
                      arm_residual=arm_residual, seed=seed,
                      label=label, offline_prior=offline_prior, prior_weight=prior_weight, cache_dir=cache,
                      progress=console.is_terminal, allow_same=allow_same)
    console.print(
        f"{rep.policy} policy over {len(rep.models)} arms {rep.models} ({rep.embeddings} embeddings from "
        f"{rep.n_queries} offline queries, {len(rep.categories)} categories, feature scale "
        f"{rep.feature_scale:.4g}"
        + (f"; offline prior from {rep.n_queries} scored queries" if rep.offline_prior else "") + f") -> {rep.out}",
        highlight=False,
    )
    if rep.method:
        console.print(f"method: {rep.method}", highlight=False, markup=False)
    console.print(f"serve it: caproute serve --pool POOL.yaml --router ... --duel-policy {rep.out}", highlight=False)
