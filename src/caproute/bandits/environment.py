"""Contextual dueling-bandit environments (algorithms.md §B.1, §B.5).

An environment holds, for n queries and K models, the true utilities r*(x, a) (n, K), the query
texts and (optional) categories, and how feedback is produced:

- from observations (any store or observation frame): r*(x, a) = mean score - lambda · mean
  normalised cost (per-dataset min-max over all rows of the dataset; lambda = 1 PROPOSED: the
  same u = q - lambda c as supervise.utility.observation_utility, at another default), and
  y ~ Bernoulli(sigmoid((r*(x, a1) - r*(x, a2)) / s)) mapped to {+1, -1} (s = 0.1 PROPOSED);
- from pairwise data with recorded labels (PandaLM): the recorded label of (x, a1, a2) when the
  data has one (human majority or a judge's verdict), a fair coin for a recorded tie, and the
  Bradley-Terry link on r* (scale 1: r* is in logit units) for a pair without a recorded
  comparison (including a1 = a2, where it is a fair coin). r*(x, a) are per-instruction
  Bradley-Terry strengths fitted to the human (gold) labels, shrunk towards each model's global
  strength (see :func:`pairwise_utilities`), so regret is always measured against human preference.

Feedback uses common random numbers: round t of seed s draws one uniform u_t, and y = +1 iff
u_t < P(a1 beats a2), so every policy faces the same randomness on the same query stream.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from caproute.bandits.bradley_terry import comparisons_from_labels, fit_bradley_terry
from caproute.bandits.defaults import DEFAULT_DUEL_LAMBDA
from caproute.bandits.posterior import sigmoid
from caproute.errors import DataError
from caproute.supervise.utility import observation_utility

DEFAULT_SCALE = 0.1         # PROPOSED BTL scale s (§B.5)
PAIR_LABELS = {"human": "human_majority", "gpt35": "gpt35_label", "pandalm7b": "pandalm7b_label"}
PAIR_COLUMNS = {"model_1", "model_2", "instruction", "human_majority"}

# recorded-label codes in DuelEnvironment.labels
NOT_RECORDED, TIE = 0, 2


@dataclass
class DuelEnvironment:
    """Ground truth of a dueling-bandit simulation over n queries and K models.

    utilities (n, K): r*; perf / cost (n, K): quality in [0, 1] and normalised cost per pair (for
    the CCFT tables; cost is 0 when unknown); sigma_q (n, K): quality spread (DARS reference);
    categories (n,) or None; labels (n, K, K) int8 or None: recorded preference of row arm over
    column arm (+1 / -1, 2 = tie, 0 = not recorded).
    """

    name: str
    query_ids: np.ndarray
    texts: list[str]
    models: tuple[str, ...]
    utilities: np.ndarray
    perf: np.ndarray
    cost: np.ndarray
    sigma_q: np.ndarray
    categories: np.ndarray | None = None
    scale: float = DEFAULT_SCALE
    labels: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def preference_probability(self, q: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """P(arm i beats arm j on query q) under the Bradley-Terry link with scale s."""
        u = self.utilities
        return sigmoid((u[q, i] - u[q, j]) / self.scale)

    def feedback(self, q: int, i: int, j: int, u01: float) -> int:
        """y in {+1, -1} for round uniform u01 (common random numbers)."""
        if self.labels is not None:
            rec = int(self.labels[q, i, j])
            if rec == TIE:
                return 1 if u01 < 0.5 else -1
            if rec != NOT_RECORDED:
                return rec
        z = (float(self.utilities[q, i]) - float(self.utilities[q, j])) / self.scale
        p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
        return 1 if u01 < p else -1

    def subset(self, rows: np.ndarray) -> DuelEnvironment:
        rows = np.asarray(rows)
        return DuelEnvironment(
            self.name, self.query_ids[rows], [self.texts[r] for r in rows], self.models,
            self.utilities[rows], self.perf[rows], self.cost[rows], self.sigma_q[rows],
            None if self.categories is None else self.categories[rows], self.scale,
            None if self.labels is None else self.labels[rows], dict(self.meta))


# ----------------------------------------------------------------------------------------------
# from observations
def environment_from_observations(obs: pd.DataFrame, *, name: str = "observations",
                                  lam: float = DEFAULT_DUEL_LAMBDA, scale: float = DEFAULT_SCALE,
                                  categories: str | None = "auto") -> DuelEnvironment:
    """Environment from canonical observations of one or more datasets.

    ``categories``: 'auto' = the dataset name when the frame holds several datasets (RouterBench
    and RouterDC: one dataset per task), else none (k-means pseudo-categories later); 'dataset';
    or None. Queries lacking an observation for some model are dropped (counted in ``meta``).
    """
    from caproute.data.schema import feature_text
    from caproute.supervise.normalize import CostNormalizer
    from caproute.supervise.stats import capability_stats

    if len(obs) == 0:
        raise DataError("no observations", source=name)
    cost = CostNormalizer().fit(obs).transform(obs)
    stats = capability_stats(obs, cost)
    models = tuple(sorted(stats["model"].astype(str).unique()))
    key = stats["dataset"].astype(str) + "\x1f" + stats["query_id"].astype(str)
    stats = stats.assign(_key=key)
    full = stats.groupby("_key")["model"].nunique()
    keep = full.index[full == len(models)]
    dropped = int(len(full) - len(keep))
    if len(keep) == 0:
        raise DataError("no query has observations for every model", source=name)
    stats = stats[stats["_key"].isin(keep)]

    def pivot(col):
        return stats.pivot(index="_key", columns="model", values=col).loc[:, list(models)]

    mu_q, mu_c, sd = pivot("mu_q"), pivot("mu_c"), pivot("sigma_q")
    keys = mu_q.index.to_numpy()
    first = obs.assign(_key=obs["dataset"].astype(str) + "\x1f" + obs["query_id"].astype(str))
    first = first.drop_duplicates("_key").set_index("_key").loc[keys]
    question = first["question"] if "question" in first else pd.Series(first.index, index=first.index)
    context = first["context"] if "context" in first else pd.Series([None] * len(first), index=first.index)
    texts = [feature_text(str(q) if q is not None and q == q else str(k), c if isinstance(c, str) else None)
             for k, q, c in zip(keys, question, context, strict=True)]
    datasets = first["dataset"].astype(str).to_numpy()
    cats = None
    if categories == "dataset" or (categories == "auto" and len(set(datasets)) > 1):
        cats = datasets
    qids = np.array([k.replace("\x1f", "/") for k in keys]) if len(set(datasets)) > 1 else \
        first["query_id"].astype(str).to_numpy()
    mq, mc = mu_q.to_numpy(float), mu_c.to_numpy(float)
    return DuelEnvironment(
        name=name, query_ids=qids, texts=texts, models=models, utilities=observation_utility(mq, mc, lam),
        perf=mq, cost=mc, sigma_q=sd.to_numpy(float), categories=cats, scale=scale,
        meta={"dropped_incomplete_queries": dropped, "lambda": lam, "datasets": sorted(set(datasets)),
              "source": "observations"})


# ----------------------------------------------------------------------------------------------
# from pairwise labels (PandaLM)
def is_pairwise_file(path: str | os.PathLike) -> bool:
    p = Path(path)
    if not (p.is_file() and p.suffix == ".parquet"):
        return False
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(p).names)
    except Exception:
        return False
    return names >= PAIR_COLUMNS


def _label_codes(values: pd.Series) -> np.ndarray:
    """PandaLM coding 1 = response1 better, 2 = response2 better, 0 = tie, null = none ->
    +1, -1, 0 (tie), and NaN for none."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    out = np.full(v.shape, np.nan)
    out[v == 1] = 1.0
    out[v == 2] = -1.0
    out[v == 0] = 0.0
    return out


def pairwise_utilities(q: np.ndarray, first: np.ndarray, second: np.ndarray, label: np.ndarray,
                       n_queries: int, n_models: int, *, global_var: float = 10.0,
                       local_var: float = 1.0) -> np.ndarray:
    """r* (n_queries, n_models) from pairwise labels (+1 / -1 / 0 = tie, NaN = none).

    PROPOSED two-level Bradley-Terry: global model strengths g (prior N(0, global_var)) from all
    comparisons, then each query's strengths with prior N(g, local_var) from that query's
    comparisons. A model never compared on a query keeps its global strength.
    """
    ok = ~np.isnan(label)
    w, lo, c = comparisons_from_labels(first[ok], second[ok], label[ok])
    g = fit_bradley_terry(n_models, w, lo, c, 0.0, global_var)
    out = np.tile(g, (n_queries, 1))
    for k in np.unique(q[ok]):
        sel = ok & (q == k)
        w, lo, c = comparisons_from_labels(first[sel], second[sel], label[sel])
        out[k] = fit_bradley_terry(n_models, w, lo, c, g, local_var)
    return out


def environment_from_pairs(pairs: pd.DataFrame, *, name: str = "pandalm", label: str = "human",
                           source: str = "pairs") -> DuelEnvironment:
    """Environment from PandaLM-style pairs (model_1, model_2, instruction, input, human_majority,
    judge labels). ``label``: whose recorded verdict is the feedback ('human' majority, 'gpt35',
    'pandalm7b'); utilities always come from the human majority (gold)."""
    if label not in PAIR_LABELS:
        raise DataError(f"unknown label '{label}' (choose from {', '.join(PAIR_LABELS)})", source=source)
    missing = (PAIR_COLUMNS | {PAIR_LABELS[label]}) - set(pairs.columns)
    if missing:
        raise DataError(f"missing columns {sorted(missing)}", source=source)
    for col in ("model_1", "model_2", "instruction"):
        bad = pairs[col].isna().to_numpy()
        if bad.any():
            raise DataError("value missing", source=source, row=int(np.flatnonzero(bad)[0]) + 1, field=col)
    inp = pairs["input"].fillna("").astype(str) if "input" in pairs else pd.Series([""] * len(pairs))
    text = pairs["instruction"].astype(str) + np.where(inp.str.len() > 0, "\n" + inp, "")
    qcodes, quniq = pd.factorize(text, sort=False)
    models = tuple(sorted(set(pairs["model_1"].astype(str)) | set(pairs["model_2"].astype(str))))
    index = {m: k for k, m in enumerate(models)}
    a = pairs["model_1"].astype(str).map(index).to_numpy()
    b = pairs["model_2"].astype(str).map(index).to_numpy()
    n, k = len(quniq), len(models)
    gold = _label_codes(pairs["human_majority"])
    gold = np.where(np.isnan(gold), 0.0, gold)          # no majority (all three differ) = a tie
    util = pairwise_utilities(qcodes, a, b, gold, n, k)
    fb = _label_codes(pairs[PAIR_LABELS[label]])
    if label == "human":
        fb = gold
    labels = np.zeros((n, k, k), dtype=np.int8)
    code = np.where(np.isnan(fb), NOT_RECORDED, np.where(fb == 0, TIE, fb)).astype(np.int8)
    mirror = np.where(code == TIE, TIE, -code).astype(np.int8)
    labels[qcodes, a, b] = code
    labels[qcodes, b, a] = mirror
    # Perf for the CCFT tables: per query, the share of recorded comparisons a model won (tie = 1/2),
    # NaN where it was not compared; see ccft.category_table (nan-aware).
    wins = np.zeros((n, k))
    games = np.zeros((n, k))
    ok = ~np.isnan(gold)
    np.add.at(wins, (qcodes[ok], a[ok]), (gold[ok] + 1) / 2)
    np.add.at(wins, (qcodes[ok], b[ok]), (1 - gold[ok]) / 2)
    np.add.at(games, (qcodes[ok], a[ok]), 1)
    np.add.at(games, (qcodes[ok], b[ok]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        perf = np.where(games > 0, wins / games, np.nan)
    return DuelEnvironment(
        name=name, query_ids=np.array([f"q{i:04d}" for i in range(n)]), texts=list(quniq.astype(str)),
        models=models, utilities=util, perf=perf, cost=np.zeros((n, k)), sigma_q=np.zeros((n, k)),
        categories=None, scale=1.0, labels=labels,
        meta={"source": "pairs", "feedback_label": label, "n_pairs": int(len(pairs)),
              "recorded_ties": int((code == TIE).sum()), "missing_feedback_labels": int(np.isnan(fb).sum())})


# ----------------------------------------------------------------------------------------------
# loading
def load_environment(*, store: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
                     dataset: str | None = None, lam: float = DEFAULT_DUEL_LAMBDA,
                     scale: float = DEFAULT_SCALE, label: str = "human") -> DuelEnvironment:
    """Environment from ``--store`` or ``--data`` (a DARS dir, observation file, RouterDC folder,
    RouterBench parquet, 'builtin', or a PandaLM-style pairs parquet).

    ``dataset``: one name, a comma-separated list, or None / 'all' for every dataset (then each
    dataset is a category).
    """
    from caproute.data.store import ObservationStore

    if (store is None) == (data is None):
        raise DataError("pass exactly one of --store or --data", source="arguments")
    if data is not None and is_pairwise_file(data):
        pairs = pd.read_parquet(data)
        return environment_from_pairs(pairs, name=Path(data).parent.name or "pairs", label=label,
                                      source=str(data))
    if store is not None:
        with ObservationStore(store, read_only=True) as s:
            available = s.datasets()
            wanted = _wanted(available, dataset, str(store))
            obs = pd.concat([s.read(dataset=d) for d in wanted], ignore_index=True)
        src = str(store)
    else:
        obs, unscored = _read_observations(data)
        available = sorted(obs["dataset"].astype(str).unique())
        wanted = _wanted(available, dataset, str(data))
        obs = obs[obs["dataset"].isin(wanted)].reset_index(drop=True)
        src = str(data)
    name = wanted[0] if len(wanted) == 1 else Path(src).stem if not src.startswith("builtin") else "builtin"
    env = environment_from_observations(obs, name=name, lam=lam, scale=scale)
    env.meta["source_path"] = src
    if store is None and unscored:
        env.meta["dropped_unscored_queries"] = unscored
    return env


def _read_observations(data: str | os.PathLike) -> tuple[pd.DataFrame, int]:
    """Observations from ``--data``; returns (frame, number of dropped unscored queries).

    The RouterBench release has queries whose score is missing for every model (14 arc-challenge
    prompts); the adapter rightly refuses NaN scores, so for a duel we drop those queries (the
    count goes into the environment's ``meta`` and the report) and adapt the rest unchanged.
    """
    import tempfile

    from caproute.data.adapters import read_routerbench
    from caproute.data.formats import detect_format
    from caproute.data.source import is_builtin, read_source

    if is_builtin(data) or detect_format(data) != "routerbench" or Path(data).is_dir():
        return read_source(data), 0
    raw = pd.read_parquet(data)
    if "score" not in raw.columns or "sample_id" not in raw.columns or not raw["score"].isna().any():
        return read_routerbench(Path(data)), 0
    bad = raw.loc[raw["score"].isna(), "sample_id"].unique()
    kept = raw[~raw["sample_id"].isin(bad)]
    with tempfile.TemporaryDirectory(prefix="caproute-duel-") as tmp:
        f = Path(tmp) / Path(data).name
        kept.to_parquet(f, index=False)
        obs = read_routerbench(f)
    return obs, int(len(bad))


def _wanted(available: list[str], dataset: str | None, source: str) -> list[str]:
    if dataset is None or dataset == "all":
        return list(available)
    wanted = [d.strip() for d in dataset.split(",") if d.strip()]
    unknown = [d for d in wanted if d not in available]
    if unknown:
        raise DataError(f"unknown dataset(s) {unknown} (available: {', '.join(available)})", source=source)
    return wanted
