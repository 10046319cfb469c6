"""``caproute meta``: Meta-Router vs baselines on gold + biased preference labels (§C)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from caproute.cli import app
from caproute.cli.common import DatasetOpt, StoreOpt
from caproute.cli.params import comma_list, fraction, int_list

console = Console()


@app.command("meta")
def meta_cmd(
    json_out: Annotated[Path, typer.Option("--json", help="write result rows as JSON")],
    report: Annotated[Path, typer.Option("--report", help="folder for curves (PNG), table.md, diagnostics.json")],
    data: Annotated[str | None, typer.Option(
        "--data", help="PandaLM pairs.parquet (or its folder), a gains file, or observations with --primary")] = None,
    judge: Annotated[list[str] | None, typer.Option(
        "--judge", help="preference source: gpt35 | pandalm7b, or a semi-synthetic judge: pandalm7b-lenbias | "
                        "gpt35-lenbias (bias on query length, a covariate the learner is not given) or "
                        "pandalm7b-qbias | gpt35-qbias (bias on PC1 of the learner's own embeddings: the best "
                        "case); comma list or repeated; default: gpt35, pandalm7b",
        callback=comma_list)] = None,
    gold_n: Annotated[list[str] | None, typer.Option(
        "--gold-n", help="gold-labelled training items per run (comma list or repeated, e.g. 15,50)",
        callback=int_list("--gold-n"))] = None,
    runs: Annotated[int, typer.Option("--runs", help="Monte Carlo splits")] = 200,
    jobs: Annotated[int, typer.Option("--jobs", help="parallel processes (results do not depend on it)")] = 1,
    engine: Annotated[str, typer.Option("--engine", help="local | ray")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster address")] = None,
    seed: Annotated[int, typer.Option("--seed", help="run r uses seed + r")] = 42,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="share of queries held out",
                                                 callback=fraction("--test-fraction"))] = 0.3,
    align: Annotated[str, typer.Option("--align", help="variance | magnitude | wasserstein | none")] = "variance",
    gamma: Annotated[float, typer.Option("--gamma", help="weight of gold rows in the final regression")] = 1.0,
    overlap: Annotated[str, typer.Option("--overlap", help="clip (default) | paper (released code's masks)")] = "clip",
    methods: Annotated[list[str] | None, typer.Option(
        "--methods", help="comma-separated subset of the methods", callback=comma_list)] = None,
    effect: Annotated[str, typer.Option(
        "--effect", help="effect model of meta-r / meta-dr: forest (default, the paper's) | ridge | group | "
                         "constant | auto (lowest cross-fitted loss on the gold rows); the last four are "
                         "PROPOSED options, not the paper's")] = "forest",
    trees: Annotated[int | None, typer.Option(
        "--trees", help="trees per forest (default: the official code's 100 / 200)")] = None,
    store: StoreOpt = None, dataset: DatasetOpt = None,
    primary: Annotated[str | None, typer.Option("--primary", help="observations: primary model M_p")] = None,
    alternative: Annotated[str | None, typer.Option("--alternative", help="observations: alternative M_a")] = None,
    judge_file: Annotated[Path | None, typer.Option(
        "--judge-file", help="observations: judge verdicts (query_id + label 1/2/0 or gain)")] = None,
    sim_bias: Annotated[float, typer.Option("--sim-bias", help="simulated judge: bias towards primary")] = 0.0,
    sim_length_bias: Annotated[float, typer.Option("--sim-length-bias", help="simulated judge: verbosity bias")] = 0.0,
    sim_noise: Annotated[float, typer.Option("--sim-noise", help="simulated judge: noise sd")] = 0.0,
) -> None:
    """Efficiency gain over random routing (usage 0.2-0.8) of meta-r, meta-dr and the baselines."""
    from caproute.causal.api import load_pairwise, run_meta_experiment
    from caproute.causal.experiment import MetaConfig
    from caproute.causal.from_observations import SimulatedJudge
    from caproute.causal.gain import METHODS
    from caproute.causal.report import write_report
    from caproute.core.atomic import write_json
    from caproute.errors import DataError

    if engine not in ("local", "ray"):
        raise DataError(f"engine must be local or ray, not {engine!r}", source="--engine")
    method_list = tuple(methods) if methods else METHODS
    config = MetaConfig(gold_ns=tuple(gold_n) if gold_n else (50,), runs=runs, seed=seed,
                        test_fraction=test_fraction, methods=method_list, align=align, gamma=gamma, overlap=overlap,
                        trees=trees, effect=effect)
    gains = load_pairwise(data, judges=judge, store=store, dataset=dataset, primary=primary,
                          alternative=alternative, judge_file=judge_file,
                          simulated=SimulatedJudge(sim_bias, sim_length_bias, sim_noise, seed))
    from caproute.causal.pandalm import is_pandalm

    if primary is not None:
        name = str(next(iter(gains.values())).meta.get("dataset", dataset or "observations"))
    else:
        name = "pandalm" if is_pandalm(data) else Path(str(data)).stem
    for j, g in gains.items():
        c = g.counts()
        console.print(f"{name} / {j}: {c['items']} items, {c['queries']} queries; missing gold {c['gold_missing']}, "
                      f"missing preference {c['pref_missing']}")
    results = run_meta_experiment(gains, config, name=name, jobs=jobs, engine=engine, ray_address=ray_address)
    rows = results.rows()
    write_json(rows, json_out)
    files = write_report(results, report)
    effect_txt = config.effect if config.effect == "forest" else f"{config.effect} (PROPOSED)"
    table = Table(title=f"Meta-Router efficiency gain ({config.runs} runs; peak over usage 0.2-0.8; effect model "
                        f"{effect_txt}, overlap {config.overlap}, align {config.align}, gamma {config.gamma}, "
                        f"trees {config.trees or '100/200'}; se Nadeau-Bengio corrected)")
    for col in ("judge", "gold_n", "method", "gain", "std", "se", "usage"):
        table.add_column(col, justify="right" if col in ("gold_n", "gain", "std", "se", "usage") else "left")
    for r in rows:
        table.add_row(r["judge"], str(r["gold_n"]), r["method"], f"{r['efficiency_gain']:.2f}",
                      f"{r['efficiency_gain_std']:.2f}", f"{r['efficiency_gain_se']:.2f}", f"{r['peak_usage']:.2f}")
    console.print(table)
    console.print(f"rows: {json_out}; report: {', '.join(str(f) for f in files)}")
