"""The evaluation protocol of DARS (spec §A.6): what a router sees and what it is scored on.

- Training: the ``train`` rows of one dataset; the cost normaliser (per-dataset min-max) is
  fitted on them only and reused for test rows.
- The router sees only the ORIGINAL query text (``feature_text(question, context)``) of train
  and test queries, never a rewrite.
- Test views: the rewrite view (``observation_type == prompt_variation``) and the decode view
  (``decoding_variation``) are each summarised per (query, model) by the mean quality ``Q`` and
  mean normalised cost ``C`` of the view's observations (:class:`ViewMatrix`). A dataset with
  only one view reports that view. A test query missing a model in a view is left out of that
  view (the count is kept in ``ViewMatrix.dropped``).

Two data preparations used for RouterDC-style data (one view, k correct of n decodes):
:func:`resplit_decodes` (query split + per-pair decode split) and :func:`pool_datasets`
(several tasks evaluated as one dataset).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from caproute.data.order import canonical_rows
from caproute.data.schema import DECODING_VARIATION, PROMPT_VARIATION
from caproute.errors import DataError
from caproute.supervise.coverage import coverage_from_pairs
from caproute.supervise.normalize import CostNormalizer
from caproute.supervise.utility import observation_utility

#: view name -> observation_type of its test rows (paper order: rewrite, then decode)
VIEWS: dict[str, str] = {"rewrite": PROMPT_VARIATION, "decode": DECODING_VARIATION}


@dataclass
class ViewMatrix:
    """One test view: ``q`` / ``c`` (n_view, m) mean quality / normalised cost per (query, model),
    ``n_obs`` the observation counts, ``rows`` the positions of its queries in the experiment's
    test-query list."""

    name: str
    query_ids: np.ndarray
    rows: np.ndarray
    q: np.ndarray
    c: np.ndarray
    n_obs: np.ndarray
    dropped: int = 0
    #: sample std (ddof = 1; 0 for a single observation) of quality over the view's observations
    s: np.ndarray | None = None

    def utility(self, lam: float) -> np.ndarray:
        """Mean per-observation utility u = q - lam * c per (query, model): (n_view, m)."""
        return observation_utility(self.q, self.c, lam)


@dataclass
class Experiment:
    """One dataset ready for the grid: training rows, original-query texts and test views.

    ``train_query_ids`` are sorted as strings, the order :class:`~caproute.supervise.supervision.
    Supervision` uses, so ``X_train`` rows line up with supervision rows.
    """

    dataset: str
    models: tuple[str, ...]
    train_obs: pd.DataFrame
    normalizer: CostNormalizer
    train_query_ids: np.ndarray
    train_texts: list[str]
    test_query_ids: np.ndarray
    test_texts: list[str]
    views: dict[str, ViewMatrix]
    meta: dict = field(default_factory=dict)

    @property
    def view_names(self) -> list[str]:
        return list(self.views)

    def grid_shape(self) -> tuple[int, int]:
        """(K, R): the largest number of rewrites per query and of decodes per (pair, rewrite)
        in the training rows (the original query counts as one 'rewrite')."""
        o = self.train_obs
        k = int(o.groupby(["query_id", "model"])["prompt_variant_id"].nunique().max())
        r = int(o.groupby(["query_id", "model", "prompt_variant_id"]).size().max())
        return k, r


# --------------------------------------------------------------------------------------------
# test views


def view_matrices(test_obs: pd.DataFrame, models: tuple[str, ...], cost_norm: np.ndarray,
                  test_query_ids: np.ndarray) -> dict[str, ViewMatrix]:
    """Per-view mean quality / mean normalised cost matrices of the test rows.

    ``cost_norm``: normalised cost per row of ``test_obs``; ``test_query_ids``: the experiment's
    test-query order (each view's ``rows`` index into it).
    """
    out: dict[str, ViewMatrix] = {}
    obs = test_obs.assign(_c=np.asarray(cost_norm, dtype=float))
    obs = obs[obs["model"].isin(models)]
    pos = pd.Index(test_query_ids)
    for name, otype in VIEWS.items():
        part = obs[obs["observation_type"] == otype]
        if part.empty:
            continue
        g = part.groupby(["query_id", "model"], sort=True).agg(q=("score", "mean"), c=("_c", "mean"),
                                                                 n=("score", "size"), s=("score", "std"))
        qm = g["q"].unstack("model").reindex(columns=list(models))
        sm = g["s"].fillna(0.0).unstack("model").reindex(columns=list(models))
        cm = g["c"].unstack("model").reindex(columns=list(models))
        nm = g["n"].unstack("model").reindex(columns=list(models))
        complete = qm.notna().all(axis=1).to_numpy()
        ids = qm.index.to_numpy()[complete]
        if ids.size == 0:
            raise DataError(f"no test query has observations of every model in the {name} view "
                            f"(models {list(models)})", source="test split", field="model")
        out[name] = ViewMatrix(
            name=name, query_ids=ids, rows=pos.get_indexer(ids).astype(np.intp),
            q=qm.to_numpy(float)[complete], c=cm.to_numpy(float)[complete],
            n_obs=nm.to_numpy(float)[complete].astype(np.int64), dropped=int((~complete).sum()),
            s=sm.to_numpy(float)[complete])
    return out


# --------------------------------------------------------------------------------------------
# data preparation

def resplit_decodes(obs: pd.DataFrame, *, test_fraction: float = 0.5, test_decodes: int = 3,
                    seed: int = 0) -> pd.DataFrame:
    """Re-split data whose pairs hold n repeated observations (e.g. RouterDC's k correct of 10).

    - Queries: within each dataset a seeded random ``test_fraction`` of queries becomes test
      (``round(test_fraction * n_queries)``), the rest train. Any existing split is ignored.
    - Observations: in every (query, model) pair a uniformly random subset of ``test_decodes``
      observations is the test part and the other n - test_decodes the training part; test
      queries keep their test part, train queries their training part.

    For 0/1 scores with k successes among a pair's n observations, the number of successes in the
    test part is then exactly hypergeometric (n, k, test_decodes), and the training part keeps
    the other k minus that, as if the test decodes had been drawn without replacement.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must be in (0, 1), got {test_fraction}", source="arguments",
                        field="test_fraction")
    if test_decodes < 1:
        raise DataError(f"test decodes must be >= 1, got {test_decodes}", source="arguments",
                        field="test_decodes")
    obs = obs.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    # query split, per dataset, in sorted query order so the draw does not depend on row order
    queries = obs[["dataset", "query_id"]].drop_duplicates().sort_values(["dataset", "query_id"])
    queries = queries.reset_index(drop=True)
    is_test = np.zeros(len(queries), dtype=bool)
    for _, idx in queries.groupby("dataset", sort=True).indices.items():
        n_test = int(round(test_fraction * idx.size))
        is_test[idx[rng.permutation(idx.size)[:n_test]]] = True
    test_keys = set(zip(queries["dataset"][is_test], queries["query_id"][is_test], strict=True))
    row_test_query = np.fromiter(
        ((d, q) in test_keys for d, q in zip(obs["dataset"], obs["query_id"], strict=True)),
        dtype=bool, count=len(obs))
    # observation split: rank the rows of each pair in a seeded random order
    pair_cols = ["dataset", "query_id", "model"]
    pair = pd.MultiIndex.from_frame(obs[pair_cols].astype(str)).factorize(sort=True)[0]
    sizes = np.bincount(pair)
    if (sizes <= test_decodes).any():
        i = int(np.flatnonzero(sizes <= test_decodes)[0])
        row = int(np.flatnonzero(pair == i)[0])
        raise DataError(f"a (query, model) pair has {sizes[i]} observations; holding out "
                        f"{test_decodes} for test needs at least {test_decodes + 1}",
                        source="observations", row=row + 1, field="decode_id")
    # deterministic base order (pair, variant, decode), then a random rank within each pair
    base = np.lexsort((obs["decode_id"].to_numpy(), obs["prompt_variant_id"].to_numpy(), pair))
    key = np.empty(len(obs))
    key[base] = rng.random(len(obs))
    order = np.lexsort((key, pair))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(len(obs), dtype=np.int64)
    rank[order] = np.arange(len(obs)) - np.repeat(starts, sizes)
    row_test_obs = rank < test_decodes
    keep = row_test_query == row_test_obs
    out = obs[keep].copy()
    out["split"] = np.where(row_test_query[keep], "test", "train")
    return out.reset_index(drop=True)


def pool_datasets(obs: pd.DataFrame, datasets: list[str], name: str | None = None
                  ) -> tuple[pd.DataFrame, CostNormalizer]:
    """Evaluate several datasets as one: costs are min-max normalised per original dataset on its
    training rows (§A.2), then the rows are relabelled ``dataset = name`` with query ids
    ``<dataset>/<query_id>``. Returns the pooled rows (``cost`` now normalised) and the identity
    normaliser to use with them."""
    missing = sorted(set(datasets) - set(obs["dataset"].astype(str).unique()))
    if missing:
        raise DataError(f"no dataset {missing} (available: {sorted(obs['dataset'].astype(str).unique())})",
                        source="observations", field="dataset")
    part = obs[obs["dataset"].isin(datasets)].copy()
    train = part[part["split"] == "train"]
    if train.empty:
        raise DataError("no training rows to fit the cost normaliser", source="observations", field="split")
    lacking = sorted(set(datasets) - set(train["dataset"].astype(str).unique()))
    if lacking:
        raise DataError(f"datasets {lacking} have no training rows", source="observations", field="split")
    part["cost"] = CostNormalizer().fit(train).transform(part)
    name = name or "+".join(datasets)
    part["query_id"] = part["dataset"].astype(str) + "/" + part["query_id"].astype(str)
    part["dataset"] = name
    # normalised costs are already in training-range units: the pooled map is the identity
    return part.reset_index(drop=True), CostNormalizer({name: (0.0, 1.0)})


def prepare_experiment(obs: pd.DataFrame, *, normalizer: CostNormalizer | None = None,
                       meta: dict | None = None) -> Experiment:
    """Split one dataset's observations into the training rows and the test views.

    ``normalizer``: the cost map (default: min-max fitted on the training rows).
    """
    from caproute.features.text import query_texts

    names = sorted(obs["dataset"].astype(str).unique())
    if len(names) != 1:
        raise DataError(f"evaluate one dataset at a time (got {names}); pass --dataset",
                        source="observations", field="dataset")
    obs = obs.assign(query_id=obs["query_id"].astype(str))
    train = canonical_rows(obs[obs["split"] == "train"])
    test = obs[obs["split"] == "test"].reset_index(drop=True)
    if train.empty:
        raise DataError(f"dataset '{names[0]}' has no training rows", source="observations", field="split")
    if test.empty:
        raise DataError(f"dataset '{names[0]}' has no test rows; re-split it (caproute bench "
                        "--test-fraction F --test-decodes N)", source="observations", field="split")
    normalizer = normalizer or CostNormalizer().fit(train)
    models = tuple(sorted(train["model"].astype(str).unique()))
    # a training query missing some models stays: supervision masks the pairs never observed
    # (caproute.supervise.supervision); the coverage goes into the report
    pairs = train[["query_id", "model"]].drop_duplicates()
    coverage = coverage_from_pairs(pairs["query_id"], pairs["model"], models)
    unseen = sorted(set(test["model"].astype(str)) - set(models))
    train_ids = np.asarray(sorted(train["query_id"].astype(str).unique()))
    test_ids = np.asarray(sorted(test["query_id"].astype(str).unique()))
    overlap = np.intersect1d(train_ids, test_ids)
    if overlap.size:
        raise DataError(f"{overlap.size} queries are in both splits, e.g. {overlap[:3].tolist()}",
                        source="observations", field="query_id")
    _, train_texts = query_texts(train, train_ids)
    _, test_texts = query_texts(test, test_ids)
    views = view_matrices(test, models, normalizer.transform(test), test_ids)
    if not views:
        raise DataError("test rows have no prompt_variation or decoding_variation observations",
                        source="observations", field="observation_type")
    info = dict(meta or {})
    info.update({"n_train_queries": int(train_ids.size), "n_test_queries": int(test_ids.size),
                 "train_queries_dropped": 0, "train_coverage": coverage.to_dict(),
                 "n_train_observations": int(len(train)), "n_test_observations": int(len(test)),
                 "test_models_ignored": unseen,
                 "views": {v.name: {"n_queries": int(v.query_ids.size), "dropped": v.dropped,
                                    "obs_per_pair": float(v.n_obs.mean())} for v in views.values()}})
    return Experiment(dataset=names[0], models=models, train_obs=train, normalizer=normalizer,
                      train_query_ids=train_ids, train_texts=train_texts, test_query_ids=test_ids,
                      test_texts=test_texts, views=views, meta=info)


def load_experiment(*, store: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
                    dataset: str | None = None, test_fraction: float | None = None,
                    test_decodes: int | None = None, seed: int = 42) -> Experiment:
    """Read observations (``--store`` or ``--data``), select the dataset and prepare it.

    ``dataset``: a name, a comma-separated list or ``all`` (several datasets are pooled with
    :func:`pool_datasets`); may be omitted when the data holds one dataset.
    ``test_fraction`` / ``test_decodes``: re-split with :func:`resplit_decodes` (seeded with
    ``seed``) instead of using the data's own train/test split.
    """
    obs, wanted, source = read_datasets(store=store, data=data, dataset=dataset)
    meta: dict = {"source": source, "datasets": wanted}
    resplit = test_fraction is not None or test_decodes is not None
    if resplit:
        tf = 0.5 if test_fraction is None else float(test_fraction)
        td = 3 if test_decodes is None else int(test_decodes)
        obs = resplit_decodes(obs, test_fraction=tf, test_decodes=td, seed=seed)
        meta["resplit"] = {"test_fraction": tf, "test_decodes": td, "seed": seed}
    normalizer = None
    if len(wanted) > 1:
        obs, normalizer = pool_datasets(obs, wanted)
        meta["pooled"] = wanted
    return prepare_experiment(obs, normalizer=normalizer, meta=meta)


def read_datasets(*, store: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
                  dataset: str | None = None) -> tuple[pd.DataFrame, list[str], str]:
    """The observations of the datasets named by ``dataset`` (a name, a comma-separated list or
    ``all``; may be omitted when the data holds one). Returns (rows, dataset names, source)."""
    from caproute.data.source import read_source
    from caproute.data.store import ObservationStore, resolve_dataset

    if (store is None) == (data is None):
        raise DataError("pass exactly one of --store or --data", source="arguments")
    if store is not None:
        source = str(store)
        with ObservationStore(store, read_only=True) as s:
            available = s.datasets()
            wanted = _wanted(available, dataset, source)
            obs = pd.concat([s.read(dataset=d) for d in wanted], ignore_index=True)
    else:
        source = str(data)
        obs = read_source(data)
        available = sorted(obs["dataset"].astype(str).unique())
        wanted = _wanted(available, dataset, source)
        obs = obs[obs["dataset"].isin(wanted)].reset_index(drop=True)
    if len(wanted) == 1:
        resolve_dataset(available, wanted[0], source=source)
    return obs, wanted, source


def _wanted(available: list[str], dataset: str | None, source: str) -> list[str]:
    from caproute.data.store import resolve_dataset

    if dataset is None:
        return [resolve_dataset(available, None, source=source)]
    if dataset == "all":
        if not available:
            raise DataError("holds no observations", source=source)
        return list(available)
    names = [d.strip() for d in dataset.split(",") if d.strip()]
    for d in names:
        resolve_dataset(available, d, source=source)
    if len(set(names)) != len(names):
        raise DataError(f"dataset listed twice in '{dataset}'", source="arguments", field="dataset")
    return names
