"""``caproute scorers`` (every scorer) and ``caproute judge pairwise`` (LLM-judge preference labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from caproute.cli import app

console = Console()

judge_app = typer.Typer(no_args_is_help=True, help="LLM-as-a-judge labels from stored observations.")
app.add_typer(judge_app, name="judge")


@app.command("scorers")
def scorers_cmd() -> None:
    """List the scorers a task can use (built-in, context scorers such as the judges, plugins)."""
    from caproute.collect.scorers import scorer_catalog

    t = Table(title="scorers (pool YAML: tasks.<name>.scorer, args in scorer_args)")
    for c in ("name", "kind", "description"):
        t.add_column(c, overflow="fold")
    for r in scorer_catalog():
        t.add_row(r["name"], r["kind"], r["description"])
    console.print(t)


@judge_app.command("pairwise")
def judge_pairwise_cmd(
    config: Annotated[Path, typer.Option("--config", help="pool YAML holding the judge model")],
    store: Annotated[Path, typer.Option("--store", help="observation store (the judge cache is kept in it)")],
    judge: Annotated[str, typer.Option("--judge", help="pool model name of the judge")],
    primary: Annotated[str, typer.Option("--primary", help="model M_p (label 1)")],
    alternative: Annotated[str, typer.Option("--alternative", help="model M_a (label 2)")],
    dataset: Annotated[str, typer.Option("--dataset", help="dataset of the store")],
    judge_file: Annotated[Path | None, typer.Option(
        "--judge-file", help="CSV query_id,label for `caproute meta --judge-file`")] = None,
    pairs: Annotated[Path | None, typer.Option(
        "--pairs", help="pairs parquet (PandaLM style) for `caproute duel --data` / `duel init --data`")] = None,
    rubric: Annotated[Path | None, typer.Option("--rubric", help="extra criteria appended to the built-in rubric")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="judge reply length")] = 96,
    max_attempts: Annotated[int, typer.Option("--max-attempts", help="tries per order when unparseable")] = 2,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="stop starting comparisons at this spend")] = None,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 42,
) -> None:
    """Both-order pairwise verdicts of PRIMARY vs ALTERNATIVE per query (win/tie/loss), cached."""
    from caproute.collect.config import load_pool_config
    from caproute.collect.judge import JudgeSettings, pairwise_labels, write_pairwise_labels
    from caproute.errors import ConfigError

    if judge_file is None and pairs is None:
        raise ConfigError("pass --judge-file and/or --pairs")
    cfg = load_pool_config(config)
    settings = JudgeSettings.from_args("judge-pairwise", {
        "judge": judge, "rubric_file": str(rubric) if rubric else None, "max_tokens": max_tokens,
        "max_attempts": max_attempts})
    labels = pairwise_labels(cfg, store, dataset=dataset, primary=primary, alternative=alternative,
                             settings=settings, seed=seed, budget_usd=budget_usd)
    files = write_pairwise_labels(labels, primary, alternative, judge_file=judge_file, pairs=pairs)
    c = labels.counts
    console.print(
        f"{c['queries']} queries judged by {labels.judge_model}: {primary} {c['primary']}, {alternative} "
        f"{c['alternative']}, tie {c['tie']}, unparseable {c['unparseable']}; {c['judge_calls']} judge calls "
        f"({c['cache_hits']} cached), spend ${c['spend_usd']:.6f}; wrote {', '.join(files.values())}",
        highlight=False,
    )
