"""``caproute feedback export``: served feedback -> observations and preference rows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from caproute.cli import app
from caproute.cli.params import comma_list

console = Console()

feedback_app = typer.Typer(no_args_is_help=True, help="Production feedback back into supervision.")
app.add_typer(feedback_app, name="feedback")


def _store_text(rep, store) -> str:
    """'2 new, 3 already present in the store' (an idempotent re-run says 0 new)."""
    if store is None:
        return "no --store"
    return f"{rep.observations_new} new, {rep.observations_present} already present in the store"


@feedback_app.command("export")
def feedback_export_cmd(
    feedback_db: Annotated[Path, typer.Option("--feedback-db", help="the server's SQLite feedback store")],
    log_store: Annotated[Path | None, typer.Option(
        "--log-store", help="the server's request log (caproute serve --log-store)")] = None,
    store: Annotated[Path | None, typer.Option(
        "--store", help="upsert scalar feedback as observations into this DuckDB store")] = None,
    observations: Annotated[Path | None, typer.Option(
        "--observations", help="write scalar feedback as canonical observations (Parquet)")] = None,
    pairs: Annotated[Path | None, typer.Option(
        "--pairs", help="write pairwise feedback as preference rows (pairs parquet for caproute duel)")] = None,
    judge_file: Annotated[Path | None, typer.Option(
        "--judge-file", help="write query_id,label for caproute meta (needs --primary, --alternative)")] = None,
    primary: Annotated[str | None, typer.Option("--primary")] = None,
    alternative: Annotated[str | None, typer.Option("--alternative")] = None,
    dataset: Annotated[str, typer.Option("--dataset", help="dataset name of the exported observations")] = "feedback",
    sources: Annotated[list[str] | None, typer.Option(
        "--sources", help="score sources exported as observations: user,judge,duel [all]",
        callback=comma_list)] = None,
    replay_log: Annotated[Path | None, typer.Option(
        "--replay-log", help="write routed requests with their outcome as a replay log (JSONL) for "
        "caproute replay --log (needs --log-store)")] = None,
    reward_source: Annotated[list[str] | None, typer.Option(
        "--reward-source", help="the replay log's reward: the first of these sources that rated the answer "
        "[user,judge,duel]", callback=comma_list)] = None,
) -> None:
    """Scalar feedback -> observations (supervise/train); pairwise -> preference rows (duel/meta) and
    duel observations; routed requests -> a replay log (caproute replay)."""
    from caproute.serve.feedback_export import SOURCES, export_feedback

    rep = export_feedback(feedback_db, log_store=log_store, dataset=dataset, store=store, observations=observations,
                          pairs=pairs, judge_file=judge_file, primary=primary, alternative=alternative,
                          sources=tuple(sources or SOURCES), replay_log=replay_log,
                          reward_sources=tuple(reward_source or SOURCES))
    by_source = ", ".join(f"{n} {k}" for k, n in rep.by_source.items())
    console.print(
        f"feedback: {rep.scalar_feedback} scalar, {rep.pairwise_feedback} pairwise -> {rep.observations} "
        f"observations{f' [{by_source}]' if by_source else ''} ({_store_text(rep, store)}), {rep.pairs} preference rows, "
        f"{rep.judge_rows} judge rows; skipped: {rep.skipped_not_logged} not logged, {rep.skipped_same_model} "
        f"same model" + (f"; outputs: {', '.join(rep.outputs.values())}" if rep.outputs else ""),
        highlight=False,
    )
    if replay_log is not None:
        left = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in rep.replay_skipped.items() if n)
        console.print(
            f"replay log: {rep.replay_rows} routed requests with an outcome -> {replay_log}"
            + (f" (left out: {left})" if left else "")
            + ("" if rep.replay_explored or not rep.replay_rows else
               "; no request explored (propensity 1): replay can only evaluate candidates that agree with the "
               "served router (serve --explore EPS)"),
            highlight=False,
        )
