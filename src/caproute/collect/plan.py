"""What a collection run must do: the plan (spec, missing units, seeds) and its upper-bound price.

For each query and model the plan is, in the canonical schema,

- train: K rewrites x R decodes (``prompt_variation``, ``prompt_variant_id = k``, ``decode_id = r``);
  with K = 0 (``--rewrites 0``) the original prompt only: R decodes of it (``decoding_variation``,
  ``prompt_variant_id = -1``, the single-prompt case of the DARS statistics: input variance 0);
- test: ``test_rewrites`` rewrites x 1 decode (``prompt_variation``) and ``test_decodes`` decodes
  of the original query (``decoding_variation``, ``prompt_variant_id = -1``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd

from caproute.collect.config import PoolConfig, TaskConfig
from caproute.collect.queries import stable_int
from caproute.collect.rewrite import rewrite_messages
from caproute.collect.scorers import get_scorer
from caproute.data import schema
from caproute.errors import ConfigError
from caproute.supervise.adaptive import AdaptiveConfig


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
        if spec.rewrites == 0:     # the original prompt only
            return [(-1, r, schema.DECODING_VARIATION) for r in range(spec.decodes)]
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


def tokens_of(messages: list[dict]) -> int:
    # A rough prompt size for estimates (4 characters per token plus a few per message for the template).
    return int(sum(len(str(m["content"])) for m in messages) / 4 + 4 * len(messages))


def key_set(keys: pd.DataFrame) -> set[tuple]:
    """Stored observation keys (``ObservationStore.existing_keys``) as the set :func:`iter_units`
    skips: ``(split, query_id, model, prompt_variant_id, decode_id, observation_type)``."""
    return set(
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


def plan_missing(cfg: PoolConfig, task: TaskConfig, queries: pd.DataFrame, spec: CollectSpec,
                 keys: pd.DataFrame, stored_rewrites: dict[str, list[str]]
                 ) -> tuple[set[tuple], CostEstimate, int]:
    """What a run still has to do, given the stored ``keys``: the key set, the upper-bound cost of
    the missing work and how many planned generations are already stored (skipped)."""
    existing = key_set(keys)
    est = estimate_cost(cfg, task, queries, spec, existing, stored_rewrites)
    planned = sum(len(planned_keys(s, spec)) for s in queries["split"]) * len(spec.models)
    return existing, est, planned - est.generations


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
            t = tokens_of(task.messages(q["question"], q["context"]))
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
                inp += calls * tokens_of(rewrite_messages(question, task.kind))
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
    judge_row = judge_estimate(cfg, task, rows)
    if judge_row is not None:
        rows.append(judge_row)
    return CostEstimate(rows)


def judge_estimate(cfg: PoolConfig, task: TaskConfig, rows: list[dict]) -> dict | None:
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
