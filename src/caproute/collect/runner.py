"""The collection runner: rewrites, decodes, scores and stores observations (paper §4.2, App. B, D).

It runs the plan of :mod:`caproute.collect.plan` (what is missing, at what upper-bound price)
against the pool, with the ledger of :mod:`caproute.collect.ledger` (spend, budget, why it stopped),
the writer and progress of :mod:`caproute.collect.progress`, and the tables of
:mod:`caproute.data.collect_tables`; reports are :mod:`caproute.collect.reports`.

Each observation is written to the :class:`ObservationStore` soon after it completes (small batched
upserts with ``on_conflict='ignore'``), so a run killed with SIGKILL loses at most one unflushed batch
and a rerun skips every stored key: nothing is duplicated, nothing is lost. Rewrites are persisted
(table ``collect_rewrites``) before any decode uses them, so a resumed run reuses the same texts.
Every request has a deterministic seed derived from its key, so on servers that honour seeds a
resumed run regenerates exactly what the killed one would have.

Memory is bounded: jobs come from lazy per-model iterators pulled by ``max_concurrency`` workers
per model (at most that many requests in flight) and the write buffer holds at most one batch.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator

import pandas as pd

from caproute.collect.client import ChatClient, GenerationError
from caproute.collect.config import PoolConfig, TaskConfig
from caproute.collect.ledger import BudgetLedger, BudgetStop, RunStats, endpoint_down, stop_run
from caproute.collect.plan import (
    CollectSpec,
    CostEstimate,
    Unit,
    generation_seed,
    iter_units,
    plan_missing,
    rewrites_needed,
    tokens_of,
)
from caproute.collect.progress import CollectProgress, ObservationWriter
from caproute.collect.queries import stable_int
from caproute.collect.rewrite import MiniLM, make_rewrites, rewrite_messages
from caproute.collect.scorers import ContextScorer, Scorer, get_scorer
from caproute.data import schema
from caproute.data.collect_tables import ensure_side_tables, load_rewrites, save_queries, save_rewrites
from caproute.data.store import ObservationStore
from caproute.errors import ConfigError


async def _run(
    cfg: PoolConfig,
    task: TaskConfig,
    scorer: Scorer | ContextScorer,
    queries: pd.DataFrame,
    spec: CollectSpec,
    store: ObservationStore,
    existing: set[tuple],
    stats: RunStats,
    progress: CollectProgress,
) -> None:
    con = store.connection
    names = list(spec.models)
    clients: dict[str, ChatClient] = {
        n: ChatClient(cfg.model(n), seed=stable_int("client", spec.seed, n)) for n in names
    }
    rw_name = cfg.rewriter.model if cfg.rewriter is not None else None
    if rw_name is not None and rw_name not in clients:
        clients[rw_name] = ChatClient(cfg.rewriter_endpoint(), seed=stable_int("client", spec.seed, rw_name))
    embedder = MiniLM() if spec.similarity_check else None
    qmap = {r.query_id: r for r in queries.itertuples(index=False)}
    rewrites = load_rewrites(con, spec.dataset)
    pending: dict[str, asyncio.Future] = {}
    writer = ObservationWriter(store, spec, spec.dataset)
    stop = asyncio.Event()

    ledger = BudgetLedger(stats, spec.budget_usd, stop)
    charge, observe_cost, admit, release = ledger.charge, ledger.observe_cost, ledger.admit, ledger.release

    # context scorers (judge, code-exec) run async; judge calls are cached in this store and charged
    bound = (
        scorer.bind(cfg, con=con, charge=charge, seed=stable_int("judge", spec.seed))
        if isinstance(scorer, ContextScorer)
        else None
    )

    async def get_rewrites(qid: str, need: int) -> list[str]:
        have = rewrites.get(qid, [])
        if len(have) >= need:
            return have
        if qid in pending:
            await pending[qid]
            return await get_rewrites(qid, need)
        if cfg.rewriter is None:
            raise ConfigError("the pool config has no rewriter but the plan needs rewrites")
        fut = asyncio.get_running_loop().create_future()
        pending[qid] = fut
        try:
            q = qmap[qid]
            rw = cfg.rewriter
            upper_per_rewrite = (
                cfg.rewriter_endpoint().cost_usd(
                    tokens_of(rewrite_messages(q.question, task.kind)), rw.max_tokens
                )
                * rw.max_attempts
            )
            reserved = await admit("rewriter", upper_per_rewrite, need - len(have))
            try:
                res = await make_rewrites(
                    q.question,
                    need - len(have),
                    client=clients[rw.model],
                    cfg=cfg,
                    kind=task.kind,
                    seed=stable_int("rewrite", spec.seed, spec.dataset, qid),
                    embedder=embedder,
                    start=len(have),
                    accepted_before=have,
                )
                observe_cost("rewriter", res.cost, need - len(have))
            finally:
                await release(reserved, "rewriter")
            save_rewrites(con, spec.dataset, qid, res, start=len(have))
            rewrites[qid] = have + res.texts
            stats.rewrite_calls += sum(1 for a in res.attempts if a.source == "model")
            stats.rewrites_model += res.sources.count("model")
            stats.rewrites_template += res.sources.count("template")
            charge(res.cost)
            return rewrites[qid]
        finally:
            del pending[qid]
            fut.set_result(None)

    async def do_unit(u: Unit) -> list[tuple[float, float]] | None:
        """Generate, score and store one unit; returns the stored (score, cost) pairs, or None
        when the budget stops the run."""
        q = qmap[u.query_id]
        text = q.question
        if u.variant_id >= 0:
            text = (await get_rewrites(u.query_id, rewrites_needed(u.split, spec)))[u.variant_id]
        messages = task.messages(text, q.context)
        ep = cfg.model(u.model)
        try:
            reserved = await admit(u.model, ep.cost_usd(tokens_of(messages), task.max_tokens),
                                   len(u.decode_ids))
        except BudgetStop:
            return None
        stored: list[tuple[float, float]] = []
        seed = generation_seed(spec, u.query_id, u.model, u.variant_id) + u.decode_ids[0]
        try:
            gens = await clients[u.model].generate(
                messages,
                n=len(u.decode_ids),
                max_tokens=task.max_tokens,
                temperature=task.temperature,
                top_p=task.top_p,
                seed=seed,
                stop=task.stop,
            )
            observe_cost(u.model, sum(g.cost for g in gens), len(gens))
        finally:
            await release(reserved, u.model)
        for r, g in zip(u.decode_ids, gens, strict=True):
            key = {"dataset": spec.dataset, "split": u.split, "query_id": u.query_id, "model": u.model,
                   "prompt_variant_id": u.variant_id, "decode_id": r, "observation_type": u.observation_type}
            if bound is None:
                res = scorer(g.text, q.answer)
            else:
                res = await bound.score(text, q.context, g.text, q.answer)
                writer.add_detail(
                    {
                        **key,
                        "scorer": scorer.name,
                        "status": res.status,
                        "parsed": bool(res.parsed),
                        "score": res.score if res.parsed else None,
                        "scoring_cost": float((res.detail or {}).get("judge_cost_usd", 0.0)),
                        "detail": json.dumps(res.detail, default=str),
                    }
                )
                if not res.parsed and scorer.skip_unparsed:
                    # never a silent 0: not stored, counted (scoring validity report), retried on rerun
                    stats.score_failures += 1
                    charge(g.cost)
                    continue
            writer.add(
                {
                    **key,
                    "score": res.score,
                    "cost": g.cost,
                    "question": q.question,
                    "context": q.context,
                    "rewrite_text": text if u.variant_id >= 0 else None,
                    "response_text": g.text,
                    "input_tokens": g.input_tokens,
                    "output_tokens": g.output_tokens,
                    "latency_s": g.latency_s,
                    "cost_known": g.cost_known,
                }
            )
            stats.done += 1
            stats.per_model[u.model] = stats.per_model.get(u.model, 0) + 1
            stored.append((float(res.score), float(g.cost)))
            charge(g.cost)
        progress.update()
        return stored

    def failed(e: GenerationError, what: str = "error", model: str | None = None) -> bool:
        """Count a failed request; True when the caller must stop: --max-errors reached, the run
        stopped, or (``model`` given) that model's endpoint is down. An endpoint whose breaker
        opened is reported once; when it is the worker's own model only that model's work stops
        (left for a rerun), when it is the rewriter or the judge, or no model is left, the run stops."""
        down = endpoint_down(e)
        if down is not None:
            if down.endpoint not in stats.dead_endpoints:
                stats.dead_endpoints[down.endpoint] = str(down)
                progress.console.print(f"[red]endpoint down[/] {down}", highlight=False)
            alive = [n for n in names if n not in stats.dead_endpoints]
            if down.endpoint != model or not alive or spec.adaptive is not None:
                which = ("no model endpoint is left" if not alive
                         else f"'{down.endpoint}' is needed by every request" if down.endpoint != model
                         else "adaptive collection needs every model")
                stop_run(stats, "endpoints", f"{which}: " + "; ".join(stats.dead_endpoints.values()))
                stop.set()
            return True
        stats.errors += 1
        if len(stats.error_messages) < 20:
            stats.error_messages.append(str(e))
        progress.console.print(f"[red]{what}[/] {e}", highlight=False)
        if stats.errors >= spec.max_errors:
            stop_run(stats, "errors", f"{stats.errors} errors (--max-errors)")
            stop.set()
            return True
        return False

    async def worker(it: Iterator[Unit]) -> None:
        for u in it:
            if stop.is_set():
                return
            try:
                await do_unit(u)
            except BudgetStop:
                return
            except GenerationError as e:
                if failed(e, model=u.model):
                    return

    async def prefetch_rewrites() -> None:
        # Rewrite ahead of the decoders, in query order, so no model waits on the rewriter.
        for qid, split in zip(queries["query_id"], queries["split"], strict=True):
            if stop.is_set():
                return
            need = rewrites_needed(split, spec)
            if need == 0 or len(rewrites.get(qid, [])) >= need:
                continue
            try:
                await get_rewrites(qid, need)
            except BudgetStop:
                return
            except GenerationError as e:
                if failed(e, "rewrite error"):
                    return

    async def adaptive_sample(qid: str, model: str, rewrite: int, decode: int):
        try:
            return await do_unit(Unit("train", qid, model, rewrite, (decode,), schema.PROMPT_VARIATION))
        except BudgetStop:
            return None
        except GenerationError as e:
            return None if failed(e, model=model) else []

    try:
        tasks = [asyncio.create_task(prefetch_rewrites())] if cfg.rewriter is not None else []
        for n in names:
            it = iter_units(queries, n, spec, existing, train=spec.adaptive is None)
            tasks += [asyncio.create_task(worker(it)) for _ in range(cfg.model(n).max_concurrency)]
        if spec.adaptive is not None:
            tasks.append(asyncio.create_task(_run_adaptive(cfg, task, queries, spec, store, stats,
                                                           adaptive_sample, stop)))
        await asyncio.gather(*tasks)
    finally:
        writer.flush()
        for c in clients.values():
            await c.aclose()
        if bound is not None:
            await bound.aclose()
        progress.update(force=True)


async def _run_adaptive(cfg: PoolConfig, task: TaskConfig, queries: pd.DataFrame, spec: CollectSpec,
                        store: ObservationStore, stats: RunStats, sample, stop: asyncio.Event) -> None:
    """The training split, collected adaptively (see :mod:`caproute.collect.adaptive`)."""
    import numpy as np

    from caproute.collect.adaptive import AdaptivePlanner, AdaptiveProgress, run_adaptive

    train_ids = [str(q) for q, s in zip(queries["query_id"], queries["split"], strict=True) if s == "train"]
    full = len(train_ids) * len(spec.models) * max(spec.rewrites, 1) * spec.decodes
    budget = None if spec.budget_fraction is None else int(spec.budget_fraction * full)
    # price of one generation per model (a typical prompt, max_tokens): for the cost-aware choice
    prompt = tokens_of(task.messages("x" * 200, None))
    prices = np.array([cfg.model(m).cost_usd(prompt, task.max_tokens) for m in spec.models])
    planner = AdaptivePlanner(spec.models, spec.rewrites, spec.decodes, spec.adaptive, prices,
                              seed=spec.seed, dataset=spec.dataset, budget_generations=budget)
    planner.load(store.read(dataset=spec.dataset, split="train"))
    prog = AdaptiveProgress(full_grid=full)
    concurrency = sum(cfg.model(m).max_concurrency for m in spec.models)
    try:
        await run_adaptive(planner, train_ids, sample, concurrency=concurrency, stop=stop, progress=prog)
    finally:
        prog.per_query = {q: int(st.n.sum()) for q, st in planner.state.items()}
        stats.adaptive = prog.to_dict()
        if prog.stopped_budget:
            stop_run(stats, "budget", f"adaptive budget of {spec.budget_fraction:g} x the full grid reached")


def collect(
    cfg: PoolConfig,
    queries: pd.DataFrame,
    store_path: str | os.PathLike,
    spec: CollectSpec,
    *,
    dry_run: bool = False,
    console=None,
    progress: bool = True,
    progress_every_s: float = 30.0,
    on_plan=None,
) -> tuple[RunStats, CostEstimate]:
    """Run (or, with ``dry_run``, only price) a collection into the store at ``store_path``.

    ``on_plan(stats, estimate)`` is called once the missing work is known, before any request.
    Returns the run statistics and the upper-bound cost estimate of the work that was missing.
    """
    from rich.console import Console

    console = console or Console()
    task = cfg.task(spec.task)
    for m in spec.models:
        cfg.model(m)
    scorer = get_scorer(task.scorer, **task.scorer_args)
    check_gold(scorer, queries)
    with ObservationStore(store_path) as store:
        ensure_side_tables(store.connection)
        existing, est, skipped = plan_missing(cfg, task, queries, spec, store.existing_keys(dataset=spec.dataset),
                                              load_rewrites(store.connection, spec.dataset))
        stats = RunStats(total=est.generations, estimate_usd=est.total_usd, budget_usd=spec.budget_usd)
        stats.skipped_existing = skipped
        if on_plan is not None:
            on_plan(stats, est)
        if dry_run or est.generations == 0:
            return stats, est
        # fail fast, before anything is written, when the pool is down (a TCP connect per endpoint)
        from caproute.collect.client import check_reachable

        asyncio.run(
            check_reachable(
                [cfg.model(m) for m in spec.models]
                + (
                    [cfg.rewriter_endpoint()]
                    if cfg.rewriter is not None
                    and any(rewrites_needed(sp, spec) > 0 for sp in set(queries["split"]))
                    else []
                )
            )
        )
        save_queries(store.connection, spec.dataset, spec.task, queries)
        stats.started = time.monotonic()
        with CollectProgress(stats, console, every_s=progress_every_s, enabled=progress) as prog:
            try:
                asyncio.run(_run(cfg, task, scorer, queries, spec, store, existing, stats, prog))
            except KeyboardInterrupt:
                stop_run(stats, "interrupted", "interrupted")
    return stats, est


def check_gold(scorer, queries: pd.DataFrame) -> None:
    """Fail before any request when a query's answer column cannot serve the scorer."""
    from caproute.errors import DataError

    if getattr(scorer, "name", None) == "code-exec":
        from caproute.collect.code_exec import CodeTask

        for qid, gold in zip(queries["query_id"], queries["answer"], strict=True):
            try:
                CodeTask.parse(gold)
            except ValueError as e:
                raise DataError(f"query '{qid}': {e}", source="queries", field="answer") from None
