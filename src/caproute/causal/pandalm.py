"""Reader for the PandaLM human-annotated pairwise test set (Wang et al., ICLR 2024; Apache-2.0).

``pairs.parquet`` (999 comparisons, 170 instructions, 5 models, all 10 pairs) carries three
human verdicts plus the verdicts of two LLM judges on the same pairs. caproute reads:

- gold: the human majority (``gold="majority"``, the default), or the mean of the three human
  gains (``gold="mean"``, a softer gold label in {-1, -2/3, ..., 1});
- preference: one judge, ``gpt35`` (GPT-3.5-turbo; 25 unparsable verdicts are null) or
  ``pandalm7b`` (PandaLM-7B).

Orientation: response1 comes from ``model_1`` and response2 from ``model_2`` (PandaLM's
``cmp_key``), so every gain is quality(model_1) - quality(model_2) and each item's primary model
is its ``model_1``. The query text is the instruction, followed by the input when there is one.
Nulls are kept as NaN and counted (``PairwiseGains.counts()``, ``meta['null_counts']``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from caproute.causal.labels import PairwiseGains, verdict_to_gain
from caproute.errors import DataError

PANDALM_JUDGES: dict[str, str] = {"gpt35": "gpt35_label", "pandalm7b": "pandalm7b_label"}
"""Judge name -> verdict column of pairs.parquet."""

SYNTHETIC_JUDGES: dict[str, str] = {"pandalm7b-qbias": "pandalm7b", "gpt35-qbias": "gpt35",
                                    "pandalm7b-lenbias": "pandalm7b", "gpt35-lenbias": "gpt35"}
"""Semi-synthetic judges: name -> the real judge they are built from."""
SYNTHETIC_KINDS: dict[str, str] = {"pandalm7b-qbias": "pc1", "gpt35-qbias": "pc1",
                                   "pandalm7b-lenbias": "length", "gpt35-lenbias": "length"}
"""Semi-synthetic judge -> the covariate its bias is a step function of:

- ``pc1`` (issue 14.4; :func:`query_bias_verdicts`): the first principal axis of the same MiniLM
  embeddings whose PCA-50 the learner receives. The learner sees the bias covariate: the
  method's **best case**.
- ``length`` (issue 24.4; :func:`length_bias_verdicts`): the word count of the query text (a
  real covariate of PandaLM) above / below its median. The learner is NOT given it (its features
  are the embedding's PCA-50 and the model pair); :func:`covariate_visibility` measures how well
  those features predict it anyway.
"""
QBIAS_RATE = 0.5      # PROPOSED: share of verdicts replaced by the query-dependent bias
QBIAS_SEED = 0

GOLD_MODES = ("majority", "mean")
PANDALM_FILE = "pairs.parquet"
_REQUIRED = ("idx", "instruction", "input", "model_1", "model_2", "human_1", "human_2", "human_3",
             "human_majority", *PANDALM_JUDGES.values())
ATTRIBUTION = ("PandaLM human-annotated test set, github.com/WeOpenML/PandaLM "
               "(commit 3871806e), Apache-2.0; Wang et al., ICLR 2024")


def resolve_pandalm_path(path: str | os.PathLike) -> Path:
    """A directory holding pairs.parquet, the file itself, or ``builtin`` (the copy in the package)."""
    if str(path) == "builtin":
        from caproute.data.source import builtin_pandalm_path

        return builtin_pandalm_path()
    p = Path(path)
    if p.is_dir():
        p = p / PANDALM_FILE
    if not p.exists():
        raise DataError("file not found (expected PandaLM's pairs.parquet)", source=str(p))
    return p


def is_pandalm(path: str | os.PathLike) -> bool:
    """True when ``path`` (file or folder) is a PandaLM pairs file (by its columns)."""
    import pyarrow.parquet as pq

    p = resolve_pandalm_path(path) if str(path) == "builtin" else Path(path)
    p = p / PANDALM_FILE if p.is_dir() else p
    if not p.is_file() or p.suffix.lower() != ".parquet":
        return False
    try:
        names = set(pq.read_schema(p).names)
    except Exception:  # noqa: BLE001 - not a readable Parquet file: not PandaLM
        return False
    return set(_REQUIRED) <= names  # the embedded copy has no response texts


def read_pandalm(path: str | os.PathLike, judge: str = "gpt35", gold: str = "majority") -> PairwiseGains:
    """PandaLM pairs as :class:`PairwiseGains` with the human gold and ``judge``'s preferences."""
    if judge not in PANDALM_JUDGES:
        raise DataError(f"unknown judge '{judge}' (choose from {sorted(PANDALM_JUDGES)})", source="--judge")
    if gold not in GOLD_MODES:
        raise DataError(f"unknown gold mode '{gold}' (choose from {GOLD_MODES})", source="gold")
    p = resolve_pandalm_path(path)
    try:
        df = pd.read_parquet(p)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read Parquet ({type(e).__name__}: {e})", source=str(p)) from None
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"missing PandaLM columns {missing}", source=str(p), field=missing[0])
    src = str(p)
    humans = np.column_stack([verdict_to_gain(df[f"human_{k}"], source=src, field=f"human_{k}")
                              for k in (1, 2, 3)])
    majority = verdict_to_gain(df["human_majority"], source=src, field="human_majority")
    prefs = {name: verdict_to_gain(df[col], source=src, field=col) for name, col in PANDALM_JUDGES.items()}
    if gold == "majority":
        gold_gain, gold_source = majority, "human_majority"
    else:
        # mean of the annotators who gave a verdict; NaN only if none did
        with np.errstate(invalid="ignore"):
            counts = np.isfinite(humans).sum(axis=1)
            gold_gain = np.where(counts > 0, np.nansum(humans, axis=1) / np.maximum(counts, 1), np.nan)
        gold_source = "human_mean"
    text = _query_text(df["instruction"], df["input"])
    # one query = one (instruction, input); 170 in the released file
    query_id = pd.factorize(pd.Series(text))[0]
    items = pd.DataFrame({
        "item_id": "pandalm-" + df["idx"].astype(str), "query_id": [f"q{q:04d}" for q in query_id],
        "text": text, "model_1": df["model_1"].astype(str), "model_2": df["model_2"].astype(str),
        "gold": gold_gain, "pref": prefs[judge],
    })
    null_counts = {"human_majority": int(np.isnan(majority).sum()),
                   **{name: int(np.isnan(v).sum()) for name, v in prefs.items()}}
    try:
        return PairwiseGains(items, gold_source, judge, {"path": src, "attribution": ATTRIBUTION,
                                                         "null_counts": null_counts})
    except DataError as e:
        raise DataError(e.reason, source=src, row=e.row, field=e.field) from None


def _query_text(instruction: pd.Series, inp: pd.Series) -> list[str]:
    out = []
    for ins, x in zip(instruction.fillna(""), inp.fillna(""), strict=True):
        ins, x = str(ins).strip(), str(x).strip()
        out.append(f"{ins}\n\n{x}" if x else ins)
    return out


def query_bias_verdicts(pref: np.ndarray, query_codes: np.ndarray, query_embeddings: np.ndarray,
                        rate: float = QBIAS_RATE, seed: int = QBIAS_SEED) -> np.ndarray:
    """A semi-synthetic judge with a strong query-dependent bias, built from a real judge's verdicts.

    The instructions are split in two halves by their score on the first principal axis of the
    instruction embeddings (above / below the median): a topic axis. With probability ``rate``
    (independently per item, seeded) the judge's verdict is replaced by "model_1 is better" (+1)
    on the first half and "model_2 is better" (-1) on the second; otherwise the real verdict is
    kept. The bias Delta(q) = psi(q) - eta(q) is then about -rate · (±1 - eta_real(q)): large,
    and a step function of the query. Missing verdicts stay missing. PROPOSED (not in the paper).
    """
    return side_bias_verdicts(pref, pc1_side(query_codes, query_embeddings), rate, seed)


def pc1_side(query_codes: np.ndarray, query_embeddings: np.ndarray) -> np.ndarray:
    """Per item: +1 if its query scores above the median on the first principal axis of
    ``query_embeddings`` (one row per query code), else -1."""
    E = np.asarray(query_embeddings, dtype=np.float64)
    C = E - E.mean(axis=0)
    v = np.linalg.svd(C, full_matrices=False)[2][0]
    score = C @ v
    return np.where(score > np.median(score), 1.0, -1.0)[np.asarray(query_codes)]


def side_bias_verdicts(pref: np.ndarray, side: np.ndarray, rate: float = QBIAS_RATE,
                       seed: int = QBIAS_SEED) -> np.ndarray:
    """Replace each verdict, independently with probability ``rate`` (seeded), by the item's
    ``side`` (+1 "model_1 better" / -1 "model_2 better"); missing verdicts stay missing.
    pref, side: (n,) per item. The construction shared by the semi-synthetic judges."""
    pref = np.asarray(pref, dtype=np.float64)
    side = np.asarray(side, dtype=np.float64)
    if side.shape != pref.shape:
        raise ValueError(f"side {side.shape} and pref {pref.shape} differ")
    replace = np.random.default_rng(seed).random(pref.size) < rate
    return np.where(replace & np.isfinite(pref), side, pref)


def word_counts(texts) -> np.ndarray:
    """Number of whitespace-separated words of each text (n,)."""
    return np.array([len(str(t).split()) for t in texts], dtype=np.float64)


def length_side(query_codes: np.ndarray, query_texts) -> np.ndarray:
    """Per item: +1 if its query's word count is above the median over the distinct queries,
    else -1. ``query_texts[k]`` is the text of query code k."""
    words = word_counts(query_texts)
    return np.where(words > np.median(words), 1.0, -1.0)[np.asarray(query_codes)]


def length_bias_verdicts(pref: np.ndarray, query_codes: np.ndarray, query_texts,
                         rate: float = QBIAS_RATE, seed: int = QBIAS_SEED) -> np.ndarray:
    """A semi-synthetic judge whose bias sits on a covariate the learner is not given (issue 24.4).

    The query's word count (instruction + input, a real covariate of PandaLM) splits the queries
    at the median: with probability ``rate`` (independently per item, seeded; the same draw as
    :func:`query_bias_verdicts`) the verdict is replaced by "model_1 better" (+1) on long queries
    and "model_2 better" (-1) on short ones. The learner's features are the MiniLM PCA-50 and
    the model pair, so the bias is identifiable only as far as those features predict length
    (:func:`covariate_visibility`). PROPOSED (not in the paper).
    """
    return side_bias_verdicts(pref, length_side(query_codes, query_texts), rate, seed)


def covariate_visibility(query_embeddings: np.ndarray, side: np.ndarray, pca_dim: int = 50,
                         folds: int = 5, seed: int = 0) -> dict[str, float]:
    """How well the learner's query features predict a binary covariate: 5-fold cross-validated
    accuracy of a logistic regression and of a random forest (100 trees) on the PCA-``pca_dim``
    scores of ``query_embeddings`` (one row per distinct query; PCA fitted inside each training
    fold), against the majority-class rate. ``side``: (u,) +-1 per distinct query."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    E = np.asarray(query_embeddings, dtype=np.float64)
    y = (np.asarray(side) > 0).astype(int)
    k = int(min(pca_dim, E.shape[1], E.shape[0] * (folds - 1) // folds - 1))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    out = {"majority_rate": float(max(y.mean(), 1 - y.mean())), "queries": int(y.size), "pca_dim": k}
    for name, clf in (("logistic", LogisticRegression(max_iter=5000)),
                      ("forest", RandomForestClassifier(100, random_state=seed, n_jobs=1))):
        out[f"{name}_accuracy"] = float(cross_val_score(make_pipeline(PCA(k, random_state=seed), clf),
                                                        E, y, cv=cv).mean())
    return out
