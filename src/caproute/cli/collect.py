"""``caproute collect``: repeated, scored observations from OpenAI-compatible endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from caproute.cli import app


@app.command("collect")
def collect_cmd(
    config: Annotated[Path, typer.Option("--config", help="pool YAML (models, rewriter, tasks)")],
    queries: Annotated[Path, typer.Option("--queries", help="JSONL/CSV/Parquet: query_id, question, answer")],
    store: Annotated[Path, typer.Option("--store", help="DuckDB observation store (created if missing)")],
    task: Annotated[str, typer.Option("--task", help="task name in the pool YAML")],
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="dataset name (default: the task name)")
    ] = None,
    models: Annotated[
        str | None, typer.Option("--models", help="comma-separated subset of pool models")
    ] = None,
    rewrites: Annotated[int, typer.Option("--rewrites", help="K rewrites per training query")] = 3,
    decodes: Annotated[int, typer.Option("--decodes", help="R decodes per rewrite")] = 3,
    test_rewrites: Annotated[int, typer.Option("--test-rewrites", help="rewrite view size (test)")] = 3,
    test_decodes: Annotated[int, typer.Option("--test-decodes", help="decode view size (test)")] = 3,
    split_test: Annotated[
        float | None,
        typer.Option("--split-test", help="fraction of queries for test (when the file has no split column)"),
    ] = None,
    budget_usd: Annotated[
        float | None, typer.Option("--budget-usd", help="stop cleanly at this spend")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the plan and a cost estimate only")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="base seed of splits and generations")] = 0,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report-dir", help="scoring-validity and rewrite-review reports (default: STORE.reports/)"
        ),
    ] = None,
    max_errors: Annotated[
        int, typer.Option("--max-errors", help="stop after this many failed requests")
    ] = 50,
    progress_every: Annotated[
        float, typer.Option("--progress-every", help="seconds between progress lines when not on a terminal")
    ] = 30.0,
    similarity_check: Annotated[
        bool,
        typer.Option("--similarity-check/--no-similarity-check", help="MiniLM similarity check of rewrites"),
    ] = True,
    engine: Annotated[str, typer.Option("--engine", help="local | ray (queries sharded across Ray workers)")] = "local",
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Ray cluster address (default: a local instance)")
    ] = None,
    shards: Annotated[
        int | None, typer.Option("--shards", help="--engine ray: query shards (default: 2 x cluster CPUs)")
    ] = None,
) -> None:
    """Collect K rewrites x R decodes per training query and the two test views, scored and costed.

    Resumable: rerun the same command after an interruption (even kill -9); stored keys are skipped.
    """
    from caproute.collect.config import load_pool_config
    from caproute.collect.queries import load_queries
    from caproute.collect.runner import CollectSpec, collect, write_reports
    from caproute.errors import ConfigError

    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be local or ray (got '{engine}')")
    if engine == "local" and (ray_address is not None or shards is not None):
        raise ConfigError("--ray-address and --shards need --engine ray")
    console = Console()
    cfg = load_pool_config(config)
    task_cfg = cfg.task(task)
    names = (
        tuple(m.strip() for m in models.split(",") if m.strip())
        if models
        else tuple(m.name for m in cfg.models)
    )
    q = load_queries(queries, split_test=split_test, seed=seed)
    spec = CollectSpec(
        dataset=dataset or task,
        task=task,
        models=names,
        rewrites=rewrites,
        decodes=decodes,
        test_rewrites=test_rewrites,
        test_decodes=test_decodes,
        seed=seed,
        budget_usd=budget_usd,
        max_errors=max_errors,
        similarity_check=similarity_check,
    )
    n_train = int((q["split"] == "train").sum())
    console.print(
        f"dataset {spec.dataset}: {n_train} train + {len(q) - n_train} test queries, models {list(names)}, "
        f"train {rewrites}x{decodes}, test {test_rewrites} rewrites + {test_decodes} decodes",
        highlight=False,
    )

    def show_plan(stats, est) -> None:
        t = Table(title="cost estimate of the missing work (upper bound: every answer at max_tokens)")
        for c in ("model", "generations", "input tokens (est.)", "output tokens (max)", "USD (upper bound)"):
            t.add_column(c, justify="left" if c == "model" else "right")
        for r in est.rows:
            t.add_row(
                r["model"],
                str(r["generations"]),
                str(r["input_tokens_est"]),
                str(r["output_tokens_max"]),
                f"{r['usd_upper_bound']:.6f}",
            )
        console.print(t)
        console.print(
            f"already stored: {stats.skipped_existing}; to generate: {est.generations}", highlight=False
        )

    if engine == "ray":
        from caproute.collect.distributed import collect_distributed

        stats, est = collect_distributed(
            cfg, q, store, spec, shards=shards, ray_address=ray_address, dry_run=dry_run, console=console,
            on_plan=show_plan,
        )
    else:
        stats, est = collect(
            cfg,
            q,
            store,
            spec,
            dry_run=dry_run,
            console=console,
            progress_every_s=progress_every,
            on_plan=show_plan,
        )
    if dry_run:
        return
    console.print(
        f"done {stats.done}/{stats.total} in this run, spend ${stats.spend_usd:.6f}, errors {stats.errors}, "
        f"rewrites model/template {stats.rewrites_model}/{stats.rewrites_template}"
        + (f"; stopped: {stats.stopped}" if stats.stopped else ""),
        highlight=False,
    )
    if engine == "ray":
        console.print(
            f"shards: {stats.shards_merged}/{stats.shards} merged, {stats.shards_failed} failed; "
            f"{stats.recovered_rows} rows recovered from shard files of an earlier run",
            highlight=False,
        )
    out = report_dir or Path(str(store) + ".reports")
    rep = write_reports(store, spec.dataset, task_cfg, out / spec.dataset)
    v = rep["scoring_validity"]
    console.print(
        f"scoring validity: parse rate {v['parse_rate']:.3f}, rescore agreement {v['rescore_agreement']:.3f}, "
        f"non-finite {v['non_finite_scores']}, out of range {v['out_of_range_scores']}, "
        f"duplicate keys {v['duplicate_keys']}; reports in {out / spec.dataset}/",
        highlight=False,
    )
    if stats.stopped and not stats.stopped.startswith(("budget", "interrupted")):
        raise typer.Exit(1)
