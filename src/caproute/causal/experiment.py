"""Monte Carlo evaluation of the Meta-Router and its baselines (§C.4) on pairwise gains.

One *cell* is (gold_n, run). Its split depends only on ``seed + run`` (the code's 42 + run), so
every gold_n and every judge of a run shares the test set, and the gold rows of a smaller gold_n
are a subset of a larger one's (nested designs: differences between methods, judges and gold_n
are not split noise). Per cell:

1. test: a random ``test_fraction`` of the *queries* (all items of a query go to the same side,
   so a test instruction is never seen in training); test items need a gold label;
2. gold: ``gold_n`` random training items with a gold label (T = 1);
3. preference: the other training items with a preference label of the judge (T = 0);
4. features: PCA (fitted on the training queries' embeddings) + the signed model-pair indicator
   when several pairs are pooled;
5. every method is fitted and scored by the efficiency gain curve on the test items.

Items that cannot serve (no gold label in test, no preference label in the preference pool) are
counted per cell and reported, never dropped silently. Cells run through
:func:`caproute.core.runtime.map_cells`, so results are identical for any ``jobs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from caproute.causal.features import Encoder, embed_unique, pca_reduce
from caproute.causal.gain import EFFECT_VARIANTS, METHODS, GainData, fit_gain, is_method
from caproute.causal.labels import PairwiseGains
from caproute.causal.learners import EFFECT_CHOICES, paper_code_settings
from caproute.causal.metrics import USAGE_GRID, efficiency_gain, summarize_curves
from caproute.errors import DataError

JUDGE_FREE = ("gold-only", "all-gold")
"""Methods that never read preference labels (fitted once per cell, shared by every judge)."""

OVERLAP_MODES = ("clip", "paper")


@dataclass(frozen=True)
class MetaConfig:
    """Settings of one experiment. ``overlap``: ``clip`` (classifier propensity clipped to
    [0.01, 0.99], no mask; default) or ``paper`` (the released code's clips and masks).
    ``effect``: the effect model of plain ``meta-r`` / ``meta-dr``; default ``forest``, the
    paper's (``auto``, ``ridge``, ``group``, ``constant`` are PROPOSED options)."""

    gold_ns: tuple[int, ...] = (50,)
    runs: int = 200
    seed: int = 42
    test_fraction: float = 0.3
    methods: tuple[str, ...] = METHODS
    align: str = "variance"
    gamma: float = 1.0
    pca_dim: int = 50
    n_folds: int = 5
    overlap: str = "clip"
    trees: int | None = None
    effect: str = "forest"

    def __post_init__(self):
        if not self.gold_ns or min(self.gold_ns) < 1:
            raise DataError(f"gold_n must be >= 1, got {self.gold_ns}", source="--gold-n")
        if self.runs < 1:
            raise DataError(f"runs must be >= 1, got {self.runs}", source="--runs")
        if not 0 < self.test_fraction < 1:
            raise DataError(f"test_fraction must be in (0, 1), got {self.test_fraction}", source="--test-fraction")
        unknown = [m for m in self.methods if not is_method(m)]
        if unknown:
            raise DataError(f"unknown methods {unknown} (choose from {METHODS} or {EFFECT_VARIANTS})",
                            source="--methods")
        if self.effect not in EFFECT_CHOICES:
            raise DataError(f"effect must be one of {EFFECT_CHOICES}, got {self.effect!r}", source="--effect")
        if self.overlap not in OVERLAP_MODES:
            raise DataError(f"overlap must be one of {OVERLAP_MODES}", source="--overlap")
        if self.trees is not None and self.trees < 1:
            raise DataError(f"trees must be >= 1, got {self.trees}", source="--trees")

    def estimators(self, seed: int, learner: str | None = None) -> dict:
        """Estimator overrides for :func:`fit_gain`: none (the official code's forests and our R
        effect forest), or the same forests with ``trees`` trees each when set (a cheaper setting
        for tests and quick looks). ``learner`` ('r' / 'dr') adds the nuisance and effect models."""
        if self.trees is None:
            return {}
        from sklearn.ensemble import RandomForestClassifier

        from caproute.causal.learners import (
            default_effect_model,
            default_outcome_model,
            default_r_effect_model,
        )

        def rf():
            return default_outcome_model(seed).set_params(n_estimators=self.trees)

        out: dict = {"final_model": rf()}
        if learner is not None:
            effect = default_r_effect_model(seed) if learner == "r" else default_effect_model(seed)
            out.update(outcome_model=rf(), effect_forest=effect.set_params(n_estimators=self.trees),
                       propensity_model=RandomForestClassifier(n_estimators=self.trees, max_depth=20,
                                                               max_features="sqrt", random_state=seed, n_jobs=1))
        return out


@dataclass
class MetaDataset:
    """Arrays a cell needs (shared once per worker): one row per item."""

    name: str
    item_ids: np.ndarray
    query_codes: np.ndarray      # (n,) int, items of one query share a code
    embeddings: np.ndarray       # (n_queries, d): one per query code
    pair: np.ndarray             # (n, n_models) signed indicator, or (n, 0) for a single pair
    gold: np.ndarray             # (n,) NaN = no gold label
    prefs: dict[str, np.ndarray]  # judge -> (n,) NaN = no verdict
    models: tuple[str, ...]
    counts: dict = field(default_factory=dict)


def prepare_dataset(gains: dict[str, PairwiseGains], *, name: str = "pairs",
                    encoder: Encoder | None = None) -> MetaDataset:
    """Stack the preference labels of several judges on the same items and embed the queries.

    Every :class:`PairwiseGains` must hold the same items in the same order with the same gold.
    """
    if not gains:
        raise DataError("no judge given", source="--judge")
    first = next(iter(gains.values()))
    for judge, g in gains.items():
        if not (g.items["item_id"].equals(first.items["item_id"])
                and np.array_equal(g.gold, first.gold, equal_nan=True)):
            raise DataError(f"judge '{judge}' labels other items than '{next(iter(gains))}'", source=name)
    items = first.items
    codes, queries = _factorize(items["query_id"].to_numpy())
    texts = items.groupby("query_id", sort=False)["text"].first().reindex(queries).to_numpy()
    emb_u, index = embed_unique(texts, encoder)
    models = first.models
    n_pairs = len(set(zip(items["model_1"], items["model_2"], strict=True)))
    pair = first.pair_indicator(models) if n_pairs > 1 else np.zeros((len(items), 0))
    counts = {judge: g.counts() for judge, g in gains.items()}
    prefs = {}
    for j, g in gains.items():
        kind = g.meta.get("synthetic")
        if kind in ("pc1", "query-bias"):
            from caproute.causal.pandalm import query_bias_verdicts

            prefs[j] = query_bias_verdicts(g.pref, codes, emb_u[index])
        elif kind == "length":
            from caproute.causal.pandalm import length_bias_verdicts

            prefs[j] = length_bias_verdicts(g.pref, codes, texts)
        elif kind is not None:
            raise DataError(f"unknown semi-synthetic construction {kind!r}", source=j)
        else:
            prefs[j] = g.pref
    return MetaDataset(name, items["item_id"].to_numpy(), codes, emb_u[index], pair, first.gold,
                       prefs, models, counts)


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, first_pos, codes = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first_pos, kind="stable")  # codes in order of first appearance
    remap = np.empty_like(order)
    remap[order] = np.arange(order.size)
    return remap[codes], uniq[order]


@dataclass(frozen=True)
class MetaCell:
    gold_n: int
    run: int
    seed: int


@dataclass
class Split:
    test: np.ndarray
    train: np.ndarray
    gold_order: np.ndarray    # training items with a gold label, in random order (gold = first gold_n)
    unusable_test: int        # items of test queries without a gold label


def split_items(ds: MetaDataset, test_fraction: float, seed: int) -> Split:
    """Query-grouped test split and a random order of the gold-labelled training items."""
    rng = np.random.default_rng(seed)
    has_gold = np.isfinite(ds.gold)
    n_q = ds.embeddings.shape[0]
    eligible = np.unique(ds.query_codes[has_gold])
    n_test_q = max(1, int(round(test_fraction * eligible.size)))
    if n_test_q >= eligible.size:
        raise DataError(f"{eligible.size} queries with gold labels are too few for a test split", source=ds.name)
    test_q = np.zeros(n_q, bool)
    test_q[rng.permutation(eligible)[:n_test_q]] = True
    in_test = test_q[ds.query_codes]
    test = np.flatnonzero(in_test & has_gold)
    train = np.flatnonzero(~in_test)
    gold_pool = train[has_gold[train]]
    return Split(test, train, rng.permutation(gold_pool), int((in_test & ~has_gold).sum()))


def _features(ds: MetaDataset, split: Split, pca_dim: int, seed: int) -> np.ndarray:
    train_q = np.unique(ds.query_codes[split.train])
    reduced = pca_reduce(ds.embeddings[train_q], ds.embeddings, pca_dim, random_state=seed)
    return np.hstack([reduced[ds.query_codes], ds.pair])


def run_cell(cell: MetaCell, shared: tuple[MetaDataset, MetaConfig]) -> dict:
    """Gain curves of every (judge, method) for one (gold_n, run) cell, plus diagnostics."""
    ds, cfg = shared
    split = split_items(ds, cfg.test_fraction, cell.seed)
    if split.gold_order.size < cell.gold_n + cfg.n_folds:
        raise DataError(f"gold_n = {cell.gold_n} needs more gold-labelled training items than the "
                        f"{split.gold_order.size} available", source="--gold-n")
    X = _features(ds, split, cfg.pca_dim, cell.seed)
    gold_rows = split.gold_order[:cell.gold_n]
    rest = np.setdiff1d(split.train, gold_rows)
    X_test, g_test = X[split.test], ds.gold[split.test]
    out: dict = {"curves": {}, "diag": {"n_test": int(split.test.size), "unusable_test": split.unusable_test,
                                        "n_gold": int(gold_rows.size), "judges": {}}}
    common = dict(align=cfg.align, gamma=cfg.gamma, random_state=cell.seed, **cfg.estimators(cell.seed))
    shared_fits: dict[str, np.ndarray] = {}
    for method in cfg.methods:
        if method in JUDGE_FREE:
            # y_pref is not read by judge-free methods; all-gold reads the gold labels of `rest`
            data = GainData(X[gold_rows], ds.gold[gold_rows], X[rest], np.zeros(rest.size), ds.gold[rest])
            shared_fits[method] = efficiency_gain(fit_gain(method, data, **common).predict(X_test), g_test)
    for judge, pref in ds.prefs.items():
        has_pref = np.isfinite(pref[rest])
        pref_rows = rest[has_pref]
        data = GainData(X[gold_rows], ds.gold[gold_rows], X[pref_rows], pref[pref_rows], ds.gold[pref_rows])
        jd: dict = {"n_pref": int(pref_rows.size), "pref_unlabelled": int((~has_pref).sum())}
        curves = {}
        nuisance_cache: dict = {}     # exact reuse of cross-fitted nuisances across effect models
        for method in cfg.methods:
            if method in JUDGE_FREE:
                curves[method] = shared_fits[method]
                continue
            kwargs = common
            if method.startswith("meta-"):
                learner = method.partition(":")[0].removeprefix("meta-")
                kwargs = dict(common, n_folds=cfg.n_folds, effect_model=cfg.effect, nuisance_cache=nuisance_cache,
                              **cfg.estimators(cell.seed, learner))
                if cfg.overlap == "paper":
                    kwargs["effect_model"] = "forest"     # the code's effect forest (R: replaced below)
                    paper = paper_code_settings(learner, cell.seed)
                    if cfg.trees is not None:
                        paper = {k: (v.set_params(n_estimators=cfg.trees) if hasattr(v, "set_params") else v)
                                 for k, v in paper.items()}
                    kwargs.update(paper)
            fitted = fit_gain(method, data, **kwargs)
            curves[method] = efficiency_gain(fitted.predict(X_test), g_test)
            if fitted.info:
                jd[method] = fitted.info
        out["curves"][judge] = curves
        out["diag"]["judges"][judge] = jd
    out["diag"]["oracle_peak"] = float(np.max(efficiency_gain(g_test, g_test)))
    return out


@dataclass
class MetaResults:
    """Per-run gain curves: ``curves[(judge, gold_n, method)]`` is (runs, len(grid))."""

    config: MetaConfig
    dataset: str
    grid: np.ndarray
    curves: dict[tuple[str, int, str], np.ndarray]
    diagnostics: dict[tuple[str, int], dict]
    n_test: dict[int, np.ndarray]
    oracle_peak: dict[int, np.ndarray]
    counts: dict

    def rows(self) -> list[dict]:
        """JSON rows {method, judge, gold_n, efficiency_gain (peak of the mean curve), ...}.

        ``runs_at_peak`` holds each run's gain at the peak usage (run order = seed order, the same
        for every method), so paired differences between methods can be computed from the rows.
        ``efficiency_gain_se`` and ``curve_se`` are Nadeau-Bengio corrected (runs are overlapping
        resplits of the same queries: :func:`caproute.causal.metrics.resampled_se`).
        """
        rows = []
        for (judge, gold_n, method), c in self.curves.items():
            s = summarize_curves(c, self.grid, self.config.test_fraction)
            nt = self.n_test[gold_n]
            k = int(np.argmax(s["mean"]))
            rows.append({
                "method": method, "judge": judge, "gold_n": gold_n, "efficiency_gain": s["peak"],
                "efficiency_gain_std": s["peak_std"], "efficiency_gain_se": s["peak_se"],
                "peak_usage": s["peak_usage"], "efficiency_gain_per_query": s["peak"] / float(np.mean(nt)),
                "runs": s["runs"], "n_test_mean": float(np.mean(nt)),
                "curve": [float(v) for v in s["mean"]], "curve_se": [float(v) for v in s["se"]],
                "runs_at_peak": [float(v) for v in c[:, k]],
            })
        return rows


def run_meta(ds: MetaDataset, config: MetaConfig, *, jobs: int = 1, engine: str = "local",
             ray_address: str | None = None, progress: bool = True) -> MetaResults:
    """Run every (gold_n, run) cell and collect the curves (identical for any ``jobs``/engine)."""
    from caproute.core.runtime import map_cells

    cells = [MetaCell(g, r, config.seed + r) for g in config.gold_ns for r in range(config.runs)]
    outs = map_cells(run_cell, cells, shared=(ds, config), jobs=jobs, engine=engine, ray_address=ray_address,
                     progress=f"meta-router {ds.name}" if progress else None)
    curves: dict[tuple[str, int, str], list] = {}
    diags: dict[tuple[str, int], list] = {}
    n_test: dict[int, list] = {}
    oracle: dict[int, list] = {}
    for cell, out in zip(cells, outs, strict=True):
        n_test.setdefault(cell.gold_n, []).append(out["diag"]["n_test"])
        oracle.setdefault(cell.gold_n, []).append(out["diag"]["oracle_peak"])
        for judge, by_method in out["curves"].items():
            for method, curve in by_method.items():
                curves.setdefault((judge, cell.gold_n, method), []).append(curve)
            diags.setdefault((judge, cell.gold_n), []).append(
                {**out["diag"]["judges"][judge], "n_test": out["diag"]["n_test"],
                 "unusable_test": out["diag"]["unusable_test"], "n_gold": out["diag"]["n_gold"]})
    return MetaResults(config, ds.name, USAGE_GRID.copy(), {k: np.vstack(v) for k, v in curves.items()},
                       {k: summarize_diagnostics(v) for k, v in diags.items()},
                       {k: np.asarray(v) for k, v in n_test.items()},
                       {k: np.asarray(v) for k, v in oracle.items()}, ds.counts)


def summarize_diagnostics(per_run: list[dict]) -> dict:
    """Means over runs of the numeric diagnostics (row counts, scale c, overlap counts)."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                out.update(flat(v, key + "."))
            elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                out[key] = float(v)
        return out

    flats = [flat(d) for d in per_run]
    keys = sorted(set().union(*flats))
    return {k: float(np.mean([f[k] for f in flats if k in f])) for k in keys}
