"""The collection runner: rewrites, decodes, scores and stores observations (paper §4.2, App. B, D).

For each query and model it produces, in the canonical schema,

- train: K rewrites x R decodes (``prompt_variation``, ``prompt_variant_id = k``, ``decode_id = r``);
- test: ``test_rewrites`` rewrites x 1 decode (``prompt_variation``) and ``test_decodes`` decodes
  of the original query (``decoding_variation``, ``prompt_variant_id = -1``).

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
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from caproute.collect.client import ChatClient, EndpointDown, GenerationError
from caproute.collect.config import PoolConfig, TaskConfig
from caproute.collect.queries import stable_int
from caproute.collect.rewrite import (
    MiniLM,
    RewriteAttempt,
    RewriteResult,
    check_rewrite,
    clean_rewrite,
    rewrite_messages,
    template_rewrites,
)
from caproute.collect.scorers import ContextScorer, Scorer, get_scorer
from caproute.data import schema
from caproute.data.store import ObservationStore
from caproute.errors import CaprouteError, ConfigError
from caproute.supervise.adaptive import AdaptiveConfig

REWRITES_TABLE = "collect_rewrites"
ATTEMPTS_TABLE = "collect_rewrite_attempts"
QUERIES_TABLE = "collect_queries"
DETAILS_TABLE = "collect_score_details"  # judge prompt/verdict/cost, code-exec outcome, per observation


@dataclass(frozen=True)
class CollectSpec:
    """What to collect. Defaults follow the DARS protocol (K = R = 3 here; the paper used 5 x 5)."""

    dataset: str
    task: str
    models: tuple[str, ...]
    rewrites: int = 3
    decodes: int = 3
    test_rewrites: int = 3
    test_decodes: int = 3
    seed: int = 0
    budget_usd: float | None = None
    batch_size: int = 16
    flush_interval_s: float = 2.0
    max_errors: int = 50
    similarity_check: bool = True
    #: collect the training split adaptively (caproute.collect.adaptive); None = the full grid
    adaptive: AdaptiveConfig | None = None
    #: --adaptive: stop the training split at this fraction of the full grid's generations
    budget_fraction: float | None = None

    def __post_init__(self):
        for name in ("rewrites", "decodes", "test_rewrites", "test_decodes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
        if self.decodes == 0 and self.rewrites > 0:
            raise ConfigError("--decodes must be >= 1 when --rewrites > 0")
        if self.budget_fraction is not None and not 0.0 < self.budget_fraction <= 1.0:
            raise ConfigError(f"--budget-fraction must be in (0, 1] (got {self.budget_fraction})")
        if self.budget_fraction is not None and self.adaptive is None:
            raise ConfigError("--budget-fraction needs --adaptive")


@dataclass(frozen=True)
class Unit:
    """Decodes of one (query, model, prompt variant) still missing from the store."""

    split: str
    query_id: str
    model: str
    variant_id: int
    decode_ids: tuple[int, ...]
    observation_type: str


def planned_keys(split: str, spec: CollectSpec) -> list[tuple[int, int, str]]:
    """(prompt_variant_id, decode_id, observation_type) of every observation of one (query, model)."""
    if split == "train":
        return [(k, r, schema.PROMPT_VARIATION) for k in range(spec.rewrites) for r in range(spec.decodes)]
    return [(k, 0, schema.PROMPT_VARIATION) for k in range(spec.test_rewrites)] + [
        (-1, r, schema.DECODING_VARIATION) for r in range(spec.test_decodes)
    ]


def rewrites_needed(split: str, spec: CollectSpec) -> int:
    return spec.rewrites if split == "train" else spec.test_rewrites


def iter_units(queries: pd.DataFrame, model: str, spec: CollectSpec, existing: set[tuple], *,
               train: bool = True) -> Iterator[Unit]:
    """Missing work for ``model``, query by query, grouped into runs of consecutive decodes
    (``train=False``: the test split only, when the training split is collected adaptively)."""
    for qid, split in zip(queries["query_id"], queries["split"], strict=True):
        if split == "train" and not train:
            continue
        groups: dict[tuple[int, str], list[int]] = {}
        for k, r, ot in planned_keys(split, spec):
            if (split, qid, model, k, r, ot) not in existing:
                groups.setdefault((k, ot), []).append(r)
        for (k, ot), rs in groups.items():
            run: list[int] = []
            for r in sorted(rs):
                if run and r != run[-1] + 1:
                    yield Unit(split, qid, model, k, tuple(run), ot)
                    run = []
                run.append(r)
            if run:
                yield Unit(split, qid, model, k, tuple(run), ot)


def generation_seed(spec: CollectSpec, query_id: str, model: str, variant_id: int) -> int:
    """Seed of decode 0 of a (query, model, variant); decode r uses seed + r."""
    return stable_int("decode", spec.seed, spec.dataset, query_id, model, variant_id, bits=30)


# -- persistence of rewrites and queries (side tables in the same DuckDB file) ------------------------
def ensure_side_tables(con) -> None:
    con.execute(f"""CREATE TABLE IF NOT EXISTS {QUERIES_TABLE} (
        dataset VARCHAR NOT NULL, query_id VARCHAR NOT NULL, split VARCHAR NOT NULL, question VARCHAR NOT NULL,
        context VARCHAR, answer VARCHAR NOT NULL, task VARCHAR NOT NULL, PRIMARY KEY (dataset, query_id))""")
    con.execute(f"""CREATE TABLE IF NOT EXISTS {REWRITES_TABLE} (
        dataset VARCHAR NOT NULL, query_id VARCHAR NOT NULL, variant_id INTEGER NOT NULL, text VARCHAR NOT NULL,
        source VARCHAR NOT NULL, PRIMARY KEY (dataset, query_id, variant_id))""")
    con.execute(f"""CREATE TABLE IF NOT EXISTS {ATTEMPTS_TABLE} (
        dataset VARCHAR NOT NULL, query_id VARCHAR NOT NULL, variant_id INTEGER NOT NULL, attempt INTEGER NOT NULL,
        text VARCHAR, flags VARCHAR, similarity DOUBLE, accepted BOOLEAN, source VARCHAR, cost DOUBLE,
        PRIMARY KEY (dataset, query_id, variant_id, attempt))""")
    con.execute(f"""CREATE TABLE IF NOT EXISTS {DETAILS_TABLE} (
        dataset VARCHAR NOT NULL, split VARCHAR NOT NULL, query_id VARCHAR NOT NULL, model VARCHAR NOT NULL,
        prompt_variant_id INTEGER NOT NULL, decode_id INTEGER NOT NULL, observation_type VARCHAR NOT NULL,
        scorer VARCHAR NOT NULL, status VARCHAR NOT NULL, parsed BOOLEAN NOT NULL, score DOUBLE,
        scoring_cost DOUBLE, detail VARCHAR,
        PRIMARY KEY (dataset, split, query_id, model, prompt_variant_id, decode_id, observation_type))""")


def save_queries(con, dataset: str, task: str, queries: pd.DataFrame) -> None:
    """Record the queries (with gold answers) of a run; a query may not change between runs."""
    old = con.execute(
        f"SELECT query_id, split, question, answer FROM {QUERIES_TABLE} WHERE dataset = ?", [dataset]
    ).df()
    if len(old):
        merged = old.merge(
            queries[["query_id", "split", "question", "answer"]], on="query_id", suffixes=("_old", "")
        )
        for col in ("split", "question", "answer"):
            diff = merged[merged[f"{col}_old"] != merged[col]]
            if len(diff):
                raise CaprouteError(
                    f"query '{diff['query_id'].iloc[0]}' of dataset '{dataset}' has a different {col} than in "
                    f"the earlier run stored here ({diff[f'{col}_old'].iloc[0]!r} vs {diff[col].iloc[0]!r}); "
                    "use another --dataset or --store"
                )
    df = queries.assign(dataset=dataset, task=task)[
        ["dataset", "query_id", "split", "question", "context", "answer", "task"]
    ]
    con.register("_q", df)
    try:
        con.execute(f"INSERT INTO {QUERIES_TABLE} SELECT * FROM _q ON CONFLICT DO NOTHING")
    finally:
        con.unregister("_q")


def load_rewrites(con, dataset: str) -> dict[str, list[str]]:
    rows = con.execute(
        f"SELECT query_id, variant_id, text FROM {REWRITES_TABLE} WHERE dataset = ? "
        "ORDER BY query_id, variant_id",
        [dataset],
    ).fetchall()
    out: dict[str, list[str]] = {}
    for qid, _, text in rows:
        out.setdefault(qid, []).append(text)
    return out


def save_rewrites(con, dataset: str, query_id: str, result: RewriteResult, start: int) -> None:
    """Persist new rewrites (variant ids from ``start``) and their attempts in one transaction."""
    rw = pd.DataFrame(
        {
            "dataset": dataset,
            "query_id": query_id,
            "variant_id": range(start, start + len(result.texts)),
            "text": result.texts,
            "source": result.sources,
        }
    )
    at = pd.DataFrame(
        [
            {
                "dataset": dataset,
                "query_id": query_id,
                "variant_id": a.variant_id,
                "attempt": a.attempt,
                "text": a.text,
                "flags": ",".join(a.flags),
                "similarity": a.similarity,
                "accepted": a.accepted,
                "source": a.source,
                "cost": a.cost,
            }
            for a in result.attempts
        ]
    )
    con.execute("BEGIN TRANSACTION")
    try:
        if len(rw):
            con.register("_rw", rw)
            con.execute(f"INSERT INTO {REWRITES_TABLE} SELECT * FROM _rw ON CONFLICT DO NOTHING")
            con.unregister("_rw")
        if len(at):
            con.register("_at", at)
            con.execute(f"INSERT INTO {ATTEMPTS_TABLE} SELECT * FROM _at ON CONFLICT DO NOTHING")
            con.unregister("_at")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


# -- rewriting ------------------------------------------------------------------------------------
async def make_rewrites(
    question: str,
    k: int,
    *,
    client: ChatClient,
    cfg: PoolConfig,
    kind: str,
    seed: int,
    embedder: MiniLM | None,
    start: int = 0,
    accepted_before: list[str] | None = None,
) -> RewriteResult:
    """``k`` checked rewrites (variant ids ``start..start+k-1``): model attempts, template fallback."""
    rw = cfg.rewriter
    assert rw is not None
    accepted: list[str] = []
    sources: list[str] = []
    attempts: list[RewriteAttempt] = []
    prior = list(accepted_before or [])
    total_cost = 0.0
    n_attempt = 0
    while len(accepted) < k and n_attempt < k * rw.max_attempts:
        gen = (
            await client.generate(
                rewrite_messages(question, kind),
                n=1,
                max_tokens=rw.max_tokens,
                temperature=rw.temperature,
                top_p=rw.top_p,
                seed=seed + n_attempt,
                stop=rw.stop,
            )
        )[0]
        total_cost += gen.cost
        cand = clean_rewrite(gen.text)
        sim = float(embedder.similarity(question, [cand])[0]) if (embedder is not None and cand) else None
        flags = check_rewrite(
            question,
            cand,
            prior + accepted,
            kind=kind,
            finish_reason=gen.finish_reason,
            similarity=sim,
            min_similarity=rw.min_similarity,
            max_similarity=rw.max_similarity,
        )
        ok = not flags
        attempts.append(
            RewriteAttempt(start + len(accepted), n_attempt, cand, flags, sim, ok, "model", gen.cost)
        )
        if ok:
            accepted.append(cand)
            sources.append("model")
        n_attempt += 1
    if len(accepted) < k:
        if rw.fallback != "template":
            raise CaprouteError(
                f"rewriter produced only {len(accepted)} of {k} valid rewrites for "
                f"'{question[:60]}' and fallback is 'none'"
            )
        for t in template_rewrites(question, k - len(accepted), avoid=prior + accepted):
            sim = float(embedder.similarity(question, [t])[0]) if embedder is not None else None
            flags = check_rewrite(
                question,
                t,
                prior + accepted,
                kind=kind,
                similarity=sim,
                min_similarity=rw.min_similarity,
                max_similarity=rw.max_similarity,
            )
            attempts.append(RewriteAttempt(start + len(accepted), n_attempt, t, flags, sim, True, "template"))
            accepted.append(t)
            sources.append("template")
            n_attempt += 1
    if len(accepted) < k:
        raise CaprouteError(f"could not build {k} distinct rewrites of '{question[:60]}'")
    return RewriteResult(accepted, sources, attempts, total_cost)


# -- the run --------------------------------------------------------------------------------------
@dataclass
class RunStats:
    total: int = 0
    done: int = 0
    skipped_existing: int = 0
    errors: int = 0
    score_failures: int = 0  # context scorers: results not parsed (observation not stored, counted)
    spend_usd: float = 0.0  # actual cost of the answers received (usage x prices)
    reserved_usd: float = 0.0  # expected cost of the requests in flight (budget accounting)
    estimate_usd: float | None = None  # upper-bound estimate of the missing work (every answer at max_tokens)
    budget_usd: float | None = None
    rewrite_calls: int = 0
    rewrites_template: int = 0
    rewrites_model: int = 0
    stopped: str | None = None
    stop_kind: str | None = None  # budget (the user's own limit), interrupted, errors, endpoints, failed
    dead_endpoints: dict[str, str] = field(default_factory=dict)  # endpoint -> why its breaker opened
    started: float = field(default_factory=time.monotonic)
    per_model: dict[str, int] = field(default_factory=dict)
    error_messages: list[str] = field(default_factory=list)
    adaptive: dict | None = None  # collect --adaptive: generations used and saved vs the full grid

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "started"} | {"rate_per_s": self.rate}


def stop_run(stats: RunStats, kind: str, reason: str) -> None:
    """Record why a run stops (the first reason wins)."""
    if stats.stopped is None:
        stats.stopped, stats.stop_kind = reason, kind


def exit_reason(stats: RunStats) -> str | None:
    """None when a run did its job (the plan was completed, or it stopped at the user's own budget);
    otherwise the one-line reason for a non-zero exit."""
    if stats.stop_kind == "budget":
        return None
    if stats.stop_kind is not None:
        return f"stopped: {stats.stopped}"
    if stats.dead_endpoints:
        return "endpoint down: " + "; ".join(stats.dead_endpoints.values())
    if stats.errors:
        return (f"{stats.errors} request(s) failed ({stats.done} of {stats.total} generations stored); rerun "
                "the same command to retry them. First error: " + (stats.error_messages or ["?"])[0])
    return None


def endpoint_down(e: BaseException) -> EndpointDown | None:
    """The :class:`EndpointDown` behind ``e`` (itself or a cause, e.g. wrapped by the judge)."""
    while e is not None:
        if isinstance(e, EndpointDown):
            return e
        e = e.__cause__
    return None


@dataclass(frozen=True)
class CostEstimate:
    """Upper-bound cost of the missing work (every completion assumed to reach max_tokens)."""

    rows: list[dict]

    @property
    def total_usd(self) -> float:
        return float(sum(r["usd_upper_bound"] for r in self.rows))

    @property
    def generations(self) -> int:
        """Observations to generate (rewriter calls not included)."""
        return int(sum(r["generations"] for r in self.rows if r["role"] == "decode"))


def _tokens_of(messages: list[dict]) -> int:
    # A rough prompt size for estimates (4 characters per token plus a few per message for the template).
    return int(sum(len(str(m["content"])) for m in messages) / 4 + 4 * len(messages))


def estimate_cost(
    cfg: PoolConfig,
    task: TaskConfig,
    queries: pd.DataFrame,
    spec: CollectSpec,
    existing: set[tuple],
    stored_rewrites: dict[str, list[str]],
) -> CostEstimate:
    qmap = queries.set_index("query_id")
    rows = []
    for name in spec.models:
        ep = cfg.model(name)
        n = inp = 0
        for u in iter_units(queries, name, spec, existing):
            q = qmap.loc[u.query_id]
            t = _tokens_of(task.messages(q["question"], q["context"]))
            n += len(u.decode_ids)
            inp += t * len(u.decode_ids)
        out = n * task.max_tokens
        rows.append(
            {
                "model": name,
                "role": "decode",
                "generations": n,
                "input_tokens_est": inp,
                "output_tokens_max": out,
                "usd_upper_bound": ep.cost_usd(inp, out),
            }
        )
    if cfg.rewriter is not None:
        rw = cfg.rewriter
        ep = cfg.rewriter_endpoint()
        n = inp = 0
        for qid, split, question in zip(
            queries["query_id"], queries["split"], queries["question"], strict=True
        ):
            missing = rewrites_needed(split, spec) - len(stored_rewrites.get(qid, []))
            if missing > 0:
                calls = missing * rw.max_attempts
                n += calls
                inp += calls * _tokens_of(rewrite_messages(question, task.kind))
        out = n * rw.max_tokens
        rows.append(
            {
                "model": f"{rw.model} (rewriter, at most)",
                "role": "rewrite",
                "generations": n,
                "input_tokens_est": inp,
                "output_tokens_max": out,
                "usd_upper_bound": ep.cost_usd(inp, out),
            }
        )
    judge_row = _judge_estimate(cfg, task, rows)
    if judge_row is not None:
        rows.append(judge_row)
    return CostEstimate(rows)


def _judge_estimate(cfg: PoolConfig, task: TaskConfig, rows: list[dict]) -> dict | None:
    """Upper bound of the judge's calls (every attempt, both orders for pairwise, no cache hit)."""
    if task.scorer not in ("judge", "judge-pairwise"):
        return None
    scorer = get_scorer(task.scorer, **task.scorer_args)
    st = scorer.settings
    gens = [r for r in rows if r["role"] == "decode"]
    n_gen = sum(r["generations"] for r in gens)
    calls = n_gen * st.max_attempts * (2 if task.scorer == "judge-pairwise" else 1)
    # judge prompt ~ rubric and examples (~450 tokens, measured on the built-in prompt) + the query + answer(s)
    per_call = 450 + (sum(r["input_tokens_est"] for r in gens) / max(n_gen, 1)) + task.max_tokens * (
        2 if task.scorer == "judge-pairwise" else 1
    )
    inp, out = int(calls * per_call), calls * st.max_tokens
    return {
        "model": f"{st.judge} (judge, at most)",
        "role": "judge",
        "generations": calls,
        "input_tokens_est": inp,
        "output_tokens_max": out,
        "usd_upper_bound": st.endpoint(cfg).cost_usd(inp, out),
    }


class _Writer:
    def __init__(self, store: ObservationStore, spec: CollectSpec, dataset: str):
        self.store, self.spec, self.dataset = store, spec, dataset
        self.buffer: list[dict] = []
        self.details: list[dict] = []
        self.last = time.monotonic()
        self.written = 0

    def add_detail(self, row: dict) -> None:
        self.details.append(row)

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        if (
            len(self.buffer) >= self.spec.batch_size
            or time.monotonic() - self.last > self.spec.flush_interval_s
        ):
            self.flush()

    def flush(self) -> None:
        if self.details:  # before the observations: a crash in between only re-scores on resume
            con = self.store.connection
            con.register("_det", pd.DataFrame(self.details))
            try:
                con.execute(f"INSERT OR REPLACE INTO {DETAILS_TABLE} SELECT * FROM _det").fetchall()
            finally:
                con.unregister("_det")
            self.details = []
        if self.buffer:
            df = pd.DataFrame(self.buffer)
            self.written += self.store.upsert(df, source=f"collect:{self.dataset}", on_conflict="ignore")
            self.buffer = []
        self.last = time.monotonic()


class _Progress:
    """Live rich progress on a terminal; otherwise (nohup, pipes) a log line every ``every_s`` seconds."""

    # ETA from the rate of the last ETA_WINDOW_S seconds, shown once ETA_MIN_DONE generations are in:
    # the first minute mixes rewriting (queued ahead of the decoders) and server warm-up, so a rate
    # since the start overstates the remaining time several-fold (issue 16).
    ETA_WINDOW_S = 120.0
    ETA_MIN_DONE = 10

    def __init__(self, stats: RunStats, console, every_s: float = 30.0, enabled: bool = True):
        self.stats, self.console, self.every_s = stats, console, every_s
        self.enabled = enabled
        self._live = None
        self._last = 0.0
        self._samples: list[tuple[float, int]] = []  # (monotonic time, done)

    def eta_s(self) -> float | None:
        """Seconds left at the recent rate, or None while there is too little to measure it."""
        s = self.stats
        now = time.monotonic()
        self._samples.append((now, s.done))
        while len(self._samples) > 2 and now - self._samples[1][0] > self.ETA_WINDOW_S:
            self._samples.pop(0)
        t0, d0 = self._samples[0]
        if s.done < self.ETA_MIN_DONE or s.done - d0 < 2 or now - t0 <= 0:
            return None
        return (s.total - s.done) / ((s.done - d0) / (now - t0))

    def _info(self) -> str:
        s = self.stats
        eta = self.eta_s()
        budget = f" of ${s.budget_usd:g}" if s.budget_usd else ""
        return (
            f"{s.rate:.2f}/s, spent ${s.spend_usd:.6f}{budget} (actual), errors {s.errors}, "
            + ("eta: measuring" if eta is None else f"eta {eta / 60:.1f} min")
        )

    def _line(self) -> str:
        s = self.stats
        return (
            f"{s.done}/{s.total} generations, rewrites model/template {s.rewrites_model}/{s.rewrites_template}, "
            + self._info()
        )

    def __enter__(self):
        if self.enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._live = Progress(
                TextColumn("[bold]collect"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._live.__enter__()
            self._task = self._live.add_task("collect", total=self.stats.total, info="")
        return self

    def update(self, force: bool = False) -> None:
        if not self.enabled:
            return
        s = self.stats
        if self._live is not None:
            self._live.update(self._task, completed=s.done, info=self._info())
        elif force or time.monotonic() - self._last > self.every_s:
            self._last = time.monotonic()
            self.console.print(self._line(), highlight=False)

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.__exit__(*exc)
        return False


async def _run(
    cfg: PoolConfig,
    task: TaskConfig,
    scorer: Scorer | ContextScorer,
    queries: pd.DataFrame,
    spec: CollectSpec,
    store: ObservationStore,
    existing: set[tuple],
    stats: RunStats,
    progress: _Progress,
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
    writer = _Writer(store, spec, spec.dataset)
    stop = asyncio.Event()

    def charge(usd: float) -> None:
        stats.spend_usd += usd
        if spec.budget_usd is not None and stats.spend_usd >= spec.budget_usd and not stop.is_set():
            stop_run(stats, "budget", f"budget of ${spec.budget_usd} reached (spent ${stats.spend_usd:.6f})")
            stop.set()

    # Budget (issue 16): a request starts when the actual spend, plus what the requests in flight are
    # expected to cost, plus its own expected cost stays within --budget-usd. "Expected" is the mean
    # actual cost per generation seen so far for that endpoint; before its first answer it is the upper
    # bound (prompt estimate + max_tokens). A request that does not fit waits for the ones in flight
    # instead of stopping the run; the first request to an endpoint whose cost is still unknown is
    # sent while the actual spend is under the budget (one probe, so that an upper bound larger than
    # the budget does not stop the run before anything is known). The run stops when nothing is in
    # flight and the next request's expected cost no longer fits: it ends close to the budget on
    # actual spend, and passes it by at most what the requests in flight cost above their expectation.
    seen_cost: dict[str, list[float]] = {}  # endpoint -> [USD, generations]
    probing: set[str] = set()
    budget_freed = asyncio.Condition()

    def expected_usd(endpoint: str, upper_per_gen: float, n: int) -> float:
        s = seen_cost.get(endpoint)
        return (s[0] / s[1] if s and s[1] else upper_per_gen) * n

    def observe_cost(endpoint: str, usd: float, n: int) -> None:
        s = seen_cost.setdefault(endpoint, [0.0, 0])
        s[0] += usd
        s[1] += n

    async def admit(endpoint: str, upper_per_gen: float, n: int) -> float:
        """Reserve the expected cost of ``n`` generations, waiting for requests in flight while it
        does not fit; raises _Stop (budget reached) when it cannot fit."""
        async with budget_freed:
            while True:
                exp = expected_usd(endpoint, upper_per_gen, n)
                if spec.budget_usd is None or stats.spend_usd + stats.reserved_usd + exp <= spec.budget_usd:
                    stats.reserved_usd += exp
                    return exp
                if (endpoint not in seen_cost and endpoint not in probing
                        and stats.spend_usd < spec.budget_usd and not stop.is_set()):
                    probing.add(endpoint)
                    stats.reserved_usd += exp
                    return exp
                if stats.reserved_usd <= 1e-15 or stop.is_set():
                    stop_run(stats, "budget",
                             f"budget of ${spec.budget_usd} reached (spent ${stats.spend_usd:.6f}; the next "
                             f"request would cost about ${exp:.6f})")
                    stop.set()
                    raise _Stop
                await budget_freed.wait()

    async def release(reserved: float, endpoint: str) -> None:
        async with budget_freed:
            stats.reserved_usd = max(0.0, stats.reserved_usd - reserved)
            probing.discard(endpoint)
            budget_freed.notify_all()

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
                    _tokens_of(rewrite_messages(q.question, task.kind)), rw.max_tokens
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
            reserved = await admit(u.model, ep.cost_usd(_tokens_of(messages), task.max_tokens),
                                   len(u.decode_ids))
        except _Stop:
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
            except _Stop:
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
            except _Stop:
                return
            except GenerationError as e:
                if failed(e, "rewrite error"):
                    return

    async def adaptive_sample(qid: str, model: str, rewrite: int, decode: int):
        try:
            return await do_unit(Unit("train", qid, model, rewrite, (decode,), schema.PROMPT_VARIATION))
        except _Stop:
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


class _Stop(Exception):
    pass


async def _run_adaptive(cfg: PoolConfig, task: TaskConfig, queries: pd.DataFrame, spec: CollectSpec,
                        store: ObservationStore, stats: RunStats, sample, stop: asyncio.Event) -> None:
    """The training split, collected adaptively (see :mod:`caproute.collect.adaptive`)."""
    import numpy as np

    from caproute.collect.adaptive import AdaptivePlanner, AdaptiveProgress, run_adaptive

    train_ids = [str(q) for q, s in zip(queries["query_id"], queries["split"], strict=True) if s == "train"]
    full = len(train_ids) * len(spec.models) * max(spec.rewrites, 1) * spec.decodes
    budget = None if spec.budget_fraction is None else int(spec.budget_fraction * full)
    # price of one generation per model (a typical prompt, max_tokens): for the cost-aware choice
    prompt = _tokens_of(task.messages("x" * 200, None))
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
        keys = store.existing_keys(dataset=spec.dataset)
        existing = set(
            zip(
                keys["split"],
                keys["query_id"],
                keys["model"],
                keys["prompt_variant_id"].astype(int),
                keys["decode_id"].astype(int),
                keys["observation_type"],
                strict=True,
            )
        )
        est = estimate_cost(cfg, task, queries, spec, existing, load_rewrites(store.connection, spec.dataset))
        stats = RunStats(total=est.generations, estimate_usd=est.total_usd, budget_usd=spec.budget_usd)
        planned = sum(len(planned_keys(s, spec)) for s in queries["split"]) * len(spec.models)
        stats.skipped_existing = planned - est.generations
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
        with _Progress(stats, console, every_s=progress_every_s, enabled=progress) as prog:
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


# -- reports ----------------------------------------------------------------------------------------
def context_validity_report(obs: pd.DataFrame, details: pd.DataFrame, scorer_name: str) -> dict:
    """Scoring validity of a context scorer (judge, code-exec) from ``collect_score_details``.

    Counts every scored generation, stored or not: ``unparsed`` ones (e.g. a judge reply with no
    score) were not stored as observations and are listed by status, never scored 0.
    """
    import numpy as np

    scores = obs["score"].to_numpy(dtype=float)
    key = list(schema.KEY_COLUMNS)
    merged = obs[key + ["score"]].merge(details[key + ["score", "parsed"]], on=key, how="left",
                                         suffixes=("", "_detail"))
    has = merged["parsed"].notna().to_numpy()
    agree = np.isclose(merged["score"].to_numpy(float)[has], merged["score_detail"].to_numpy(float)[has], atol=1e-9)
    stored = set(map(tuple, obs[key].astype(str).to_numpy().tolist()))
    det_keys = [tuple(r) for r in details[key].astype(str).to_numpy().tolist()]
    unstored = np.array([k not in stored for k in det_keys], dtype=bool)
    per_model = {}
    for m, idx in details.groupby("model").indices.items():
        d = details.iloc[idx]
        per_model[str(m)] = {
            "scored": int(len(d)),
            "parse_rate": float(d["parsed"].astype(bool).mean()),
            "mean_score": float(d["score"].astype(float).mean()) if d["parsed"].any() else float("nan"),
        }
    status_counts = {str(k): int(v) for k, v in details["status"].value_counts().items()} if len(details) else {}
    return {
        "scorer": scorer_name,
        "n_observations": int(len(obs)),
        "n_scored": int(len(details)),
        "parse_rate": float(details["parsed"].astype(bool).mean()) if len(details) else float("nan"),
        "unparsed_not_stored": int((unstored & ~details["parsed"].astype(bool).to_numpy()).sum()) if len(details) else 0,
        "status_counts": status_counts,
        "scoring_cost_usd": float(details["scoring_cost"].fillna(0).sum()) if len(details) else 0.0,
        "non_finite_scores": int((~np.isfinite(scores)).sum()),
        "out_of_range_scores": int(((scores < 0) | (scores > 1)).sum()),
        "rescore_agreement": float(agree.mean()) if agree.size else float("nan"),
        "observations_without_detail": int((~has).sum()),
        "duplicate_keys": int(obs.duplicated(key).sum()),
        "cost_unknown": int((~obs["cost_known"].fillna(False).astype(bool)).sum()) if "cost_known" in obs else 0,
        "per_model": per_model,
    }


def scoring_validity_report(obs: pd.DataFrame, gold: pd.DataFrame, scorer: Scorer) -> dict:
    """App. D.2 checks: parse rate, finite and in-range scores, rescore agreement, duplicate keys.

    ``obs``: observations with ``response_text``; ``gold``: ``query_id`` and ``answer``.
    """
    import numpy as np

    g = dict(zip(gold["query_id"].astype(str), gold["answer"].astype(str), strict=True))
    scores = obs["score"].to_numpy(dtype=float)
    rescored, parsed = [], []
    for qid, text in zip(obs["query_id"], obs["response_text"], strict=True):
        r = scorer(text, g[qid]) if qid in g else None
        rescored.append(np.nan if r is None else r.score)
        parsed.append(False if r is None else r.parsed)
    rescored = np.asarray(rescored)
    parsed = np.asarray(parsed, dtype=bool)
    with_gold = np.isfinite(rescored)
    agree = np.isclose(rescored[with_gold], scores[with_gold], atol=1e-9)
    dup = int(obs.duplicated(list(schema.KEY_COLUMNS)).sum())
    per_model = {}
    for m, idx in obs.groupby("model").indices.items():
        per_model[str(m)] = {
            "n": int(len(idx)),
            "parse_rate": float(parsed[idx].mean()),
            "mean_score": float(np.nanmean(scores[idx])),
        }
    return {
        "n_observations": int(len(obs)),
        "parse_rate": float(parsed.mean()) if len(obs) else float("nan"),
        "non_finite_scores": int((~np.isfinite(scores)).sum()),
        "out_of_range_scores": int(((scores < 0) | (scores > 1)).sum()),
        "rescore_agreement": float(agree.mean()) if agree.size else float("nan"),
        "rows_without_gold": int((~with_gold).sum()),
        "duplicate_keys": dup,
        "non_finite_costs": int((~np.isfinite(obs["cost"].to_numpy(dtype=float))).sum()),
        "cost_unknown": int((~obs["cost_known"].fillna(False).astype(bool)).sum())
        if "cost_known" in obs
        else 0,
        "per_model": per_model,
    }


def rewrite_review(con, dataset: str) -> dict:
    """Summary of rewrite attempts: accepted by source, rejected by flag, and the flagged texts."""
    at = con.execute(
        f"SELECT * FROM {ATTEMPTS_TABLE} WHERE dataset = ? ORDER BY query_id, attempt", [dataset]
    ).df()
    rw = con.execute(
        f"SELECT source, count(*) AS n FROM {REWRITES_TABLE} WHERE dataset = ? GROUP BY source", [dataset]
    ).df()
    flags: dict[str, int] = {}
    for f in at["flags"].fillna(""):
        for x in filter(None, f.split(",")):
            flags[x] = flags.get(x, 0) + 1
    flagged = at[at["flags"].fillna("") != ""]
    return {
        "attempts": int(len(at)),
        "accepted_by_source": {str(s): int(n) for s, n in zip(rw["source"], rw["n"], strict=True)},
        "rejected_model_attempts": int(((~at["accepted"].astype(bool)) & (at["source"] == "model")).sum()),
        "flag_counts": flags,
        "flagged": [
            {
                "query_id": r.query_id,
                "variant_id": int(r.variant_id),
                "attempt": int(r.attempt),
                "text": r.text,
                "flags": r.flags,
                "accepted": bool(r.accepted),
                "source": r.source,
                "similarity": None if pd.isna(r.similarity) else round(float(r.similarity), 4),
            }
            for r in flagged.itertuples(index=False)
        ],
    }


def write_reports(
    store_path: str | os.PathLike, dataset: str, task: TaskConfig, out_dir: str | os.PathLike
) -> dict:
    """Write ``scoring_validity.json`` and ``rewrite_review.json`` for a dataset of the store."""
    from caproute.data.atomic import write_json

    out = Path(out_dir)
    with ObservationStore(store_path, read_only=True) as store:
        obs = store.read(dataset=dataset)
        gold = store.connection.execute(
            f"SELECT query_id, answer FROM {QUERIES_TABLE} WHERE dataset = ?", [dataset]
        ).df()
        review = rewrite_review(store.connection, dataset)
        scorer = get_scorer(task.scorer, **task.scorer_args)
        details = (
            store.connection.execute(f"SELECT * FROM {DETAILS_TABLE} WHERE dataset = ?", [dataset]).df()
            if isinstance(scorer, ContextScorer)
            else None
        )
    if details is not None:
        validity = context_validity_report(obs, details, scorer.name)
    else:
        validity = scoring_validity_report(obs, gold, scorer)
    write_json(validity, out / "scoring_validity.json")
    write_json(review, out / "rewrite_review.json")
    return {
        "scoring_validity": validity,
        "rewrite_review": {k: v for k, v in review.items() if k != "flagged"},
    }


def summary_json(stats: RunStats) -> str:
    return json.dumps(stats.to_dict(), indent=2, default=float)
