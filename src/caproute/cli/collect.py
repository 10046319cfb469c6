"""``caproute collect``: repeated, scored observations from OpenAI-compatible endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from caproute.cli import app
from caproute.cli.params import SEED_DEFAULT, choice, comma_list, deprecated_alias, finite, fraction
from caproute.supervise.adaptive import BETA_UPDATES, PREDICTIVES, PRIOR_FITS, RULES, AdaptiveConfig


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
        list[str] | None, typer.Option("--models", help="comma-separated subset of pool models", callback=comma_list)
    ] = None,
    rewrites: Annotated[int, typer.Option("--rewrites", help="K rewrites per training query")] = 3,
    decodes: Annotated[int, typer.Option("--decodes", help="R decodes per rewrite")] = 3,
    test_rewrites: Annotated[int, typer.Option("--test-rewrites", help="rewrite view size (test)")] = 3,
    test_decodes: Annotated[int, typer.Option("--test-decodes", help="decode view size (test)")] = 3,
    split_test: Annotated[
        float | None,
        typer.Option("--test-fraction", help="fraction of queries for test (when the file has no split column)",
                     callback=fraction("--test-fraction")),
    ] = None,
    split_test_old: Annotated[
        float | None,
        typer.Option("--split-test", hidden=True, help="deprecated: --test-fraction",
                     callback=deprecated_alias("--split-test", "--test-fraction", fraction("--split-test"))),
    ] = None,
    budget_usd: Annotated[
        float | None, typer.Option("--budget-usd", help="stop cleanly at this spend",
                                   callback=finite("--budget-usd", lo=0.0, lo_open=True))
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run/--no-dry-run", help="print the plan and a cost estimate only")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="base seed of splits and generations")] = SEED_DEFAULT,
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
    adaptive: Annotated[
        bool, typer.Option("--adaptive/--no-adaptive",
                           help="training split: sample each query until its DARS label is settled "
                                "(docs/adaptive.md) instead of the full K x R grid")
    ] = False,
    budget_fraction: Annotated[
        float | None, typer.Option("--budget-fraction",
                                   help="--adaptive: at most this fraction of the full grid's training generations")
    ] = None,
    adaptive_rule: Annotated[
        str, typer.Option("--adaptive-rule", help="--adaptive: pob (probability of best) | lucb (confidence bounds) | "
                                                  "uniform (a fixed grid, with --budget-fraction); "
                                                  "default: the library's (docs/adaptive.md)")
    ] = AdaptiveConfig.rule,
    adaptive_predictive: Annotated[
        str, typer.Option("--adaptive-predictive", help="--adaptive, pob: grid (full-grid predictive) | rate "
                                                        "(docs/adaptive.md)",
                          callback=choice("--adaptive-predictive", PREDICTIVES))
    ] = AdaptiveConfig.predictive,
    adaptive_prior_fit: Annotated[
        str, typer.Option("--adaptive-prior-fit", help="--adaptive, pob: fixed | eb (empirical-Bayes prior per model, "
                                                       "refitted from the store when its counts change)",
                          callback=choice("--adaptive-prior-fit", PRIOR_FITS))
    ] = AdaptiveConfig.prior_fit,
    adaptive_beta_update: Annotated[
        str, typer.Option("--adaptive-beta-update", help="--adaptive, pob, scores inside (0, 1): fractional | "
                                                         "bernoulli (Agrawal-Goyal)",
                          callback=choice("--adaptive-beta-update", BETA_UPDATES))
    ] = AdaptiveConfig.beta_update,
) -> None:
    """Collect K rewrites x R decodes per training query and the two test views, scored and costed.

    Resumable: rerun the same command after an interruption (even kill -9); stored keys are skipped.
    """
    from caproute.collect.config import load_pool_config
    from caproute.collect.ledger import exit_reason
    from caproute.collect.plan import CollectSpec
    from caproute.collect.queries import load_queries
    from caproute.collect.reports import write_reports
    from caproute.collect.runner import collect
    from caproute.errors import ConfigError

    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be local or ray (got '{engine}')")
    if engine == "local" and (ray_address is not None or shards is not None):
        raise ConfigError("--ray-address and --shards need --engine ray")
    console = Console()
    if not console.is_terminal:  # a pipe or a log file: no 80-column limit that would cut model names
        console = Console(width=max(console.width, 160))
    cfg = load_pool_config(config)
    task_cfg = cfg.task(task)
    names = (
        tuple(models)
        if models
        else tuple(m.name for m in cfg.models)
    )
    if split_test_old is not None:   # deprecated spelling (warned by its callback)
        split_test = split_test if split_test is not None else split_test_old
    q = load_queries(queries, split_test=split_test, seed=seed)
    adaptive_cfg = None
    if adaptive:
        if engine == "ray":
            raise ConfigError("--adaptive runs with --engine local only")
        if adaptive_rule not in RULES:
            raise ConfigError(f"--adaptive-rule must be {', '.join(RULES)} (got '{adaptive_rule}')")
        adaptive_cfg = AdaptiveConfig(rule=adaptive_rule, predictive=adaptive_predictive,
                                      prior_fit=adaptive_prior_fit, beta_update=adaptive_beta_update)
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
        adaptive=adaptive_cfg,
        budget_fraction=budget_fraction,
    )
    n_train = int((q["split"] == "train").sum())
    console.print(
        f"dataset {spec.dataset}: {n_train} train + {len(q) - n_train} test queries, models {list(names)}, "
        f"train {rewrites}x{decodes}, test {test_rewrites} rewrites + {test_decodes} decodes",
        highlight=False,
    )

    def show_plan(stats, est) -> None:
        t = Table(title="cost estimate of the missing work (upper bound: every answer at max_tokens)")
        width = max([len("model")] + [len(str(r["model"])) for r in est.rows])
        for c in ("model", "generations", "input tokens (est.)", "output tokens (max)", "USD (upper bound)"):
            # names are never cut: two models that differ only at the end must read differently
            t.add_column(c, justify="left" if c == "model" else "right", no_wrap=c == "model",
                         min_width=width if c == "model" else None)
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
            f"already stored: {stats.skipped_existing}; to generate: {est.generations}; upper-bound estimate "
            f"${est.total_usd:.6f}"
            + (f" (--budget-usd {budget_usd:g} is checked against the actual spend, from the usage each "
               "answer reports)" if budget_usd is not None else ""),
            highlight=False,
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
        f"done {stats.done}/{stats.total} in this run, spent ${stats.spend_usd:.6f} (actual; upper-bound "
        f"estimate ${est.total_usd:.6f}), errors {stats.errors}, "
        f"rewrites model/template {stats.rewrites_model}/{stats.rewrites_template}"
        + (f"; stopped: {stats.stopped}" if stats.stopped else ""),
        highlight=False,
    )
    if stats.adaptive is not None:
        a = stats.adaptive
        console.print(
            f"adaptive: {a['generations']} of {a['full_grid_generations']} training generations of the full grid "
            f"({a['saved_generations']} saved, {100 * a['saved_fraction']:.0f}%); queries settled "
            f"{a['queries_settled']}, grid full {a['queries_grid_full']}, stopped by budget "
            f"{a['queries_stopped_by_budget']}",
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
    if stats.adaptive is not None:
        from caproute.data.atomic import write_json

        write_json(stats.adaptive, out / spec.dataset / "adaptive.json")
    v = rep["scoring_validity"]
    console.print(
        f"scoring validity: parse rate {v['parse_rate']:.3f}, rescore agreement {v['rescore_agreement']:.3f}, "
        f"non-finite {v['non_finite_scores']}, out of range {v['out_of_range_scores']}, "
        f"duplicate keys {v['duplicate_keys']}; reports in {out / spec.dataset}/",
        highlight=False,
    )
    if "unparsed_not_stored" in v:  # context scorers (judge, code-exec)
        console.print(
            f"{v['scorer']}: {v['n_scored']} scored, statuses {v['status_counts']}, "
            f"{v['unparsed_not_stored']} unparsed (not stored), scoring cost ${v['scoring_cost_usd']:.6f}",
            highlight=False,
        )
    reason = exit_reason(stats)
    if reason is not None:
        from rich.markup import escape

        Console(stderr=True).print(f"[bold red]collect:[/] {escape(reason)}", highlight=False, soft_wrap=True)
        raise typer.Exit(130 if stats.stop_kind == "interrupted" else 1)
