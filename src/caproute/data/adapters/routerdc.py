"""RouterDC's repeated-sampling scores (7 LLMs x 10 decodes, released as "k correct of n").

For a 0/1 metric, k of n is a sufficient statistic, so we expand each (query, model) pair into n
0/1 decode observations. Which decode indices carry the k successes is a seeded permutation per
pair (not the first k), so that decode ``o`` of two models are independent draws: aligning
successes at the same indices would make single-shot winners artificially stable.

Only ``pass_rate_n10`` rows (gsm8k, humaneval, javascript = HumanEval-JS, mbpp) have repeated
observations; other score types are single-shot and are skipped. Files without a train/test
split ("all") are imported as ``train``. RouterDC releases no costs: cost is 0 and
``cost_known`` is false.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from caproute.data.adapters.common import read_parquet_table
from caproute.data.validate import canonicalize
from caproute.errors import DataError

REPEATED_SCORE_TYPE = "pass_rate_n10"


def expand_k_of_n(k: np.ndarray, n: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Expand pairs with k successes of n into rows: returns (pair_index, score) of length sum(n).

    Vectorised: within each pair, successes go to a seeded random subset of k decode slots.
    """
    k = np.asarray(k, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= k <= n for every pair")
    pair = np.repeat(np.arange(len(n)), n)
    rng = np.random.default_rng(seed)
    key = rng.random(pair.size)
    order = np.lexsort((key, pair))  # rows grouped by pair, random order within a pair
    starts = np.cumsum(n) - n
    rank = np.empty(pair.size, dtype=np.int64)
    rank[order] = np.arange(pair.size) - np.repeat(starts, n)
    score = (rank < k[pair]).astype(np.float64)
    return pair, score


def read_routerdc(path: Path, *, seed: int = 0) -> pd.DataFrame:
    path = Path(path)
    f = path / "scores_long.parquet" if path.is_dir() else path
    if not f.exists():
        raise DataError("RouterDC scores_long.parquet not found", source=str(f))
    df = read_parquet_table(f, "RouterDC")
    need = {"task", "split", "qid", "question", "model", "score_type", "n_samples", "k_correct"}
    missing = need - set(df.columns)
    if missing:
        raise DataError(f"missing columns {sorted(missing)}", source=str(f))
    df = df[df["score_type"] == REPEATED_SCORE_TYPE].reset_index(drop=True)
    if df.empty:
        raise DataError(f"no '{REPEATED_SCORE_TYPE}' rows", source=str(f))
    bad = df["k_correct"].isna() | df["n_samples"].isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError("k_correct/n_samples missing", source=str(f), row=i + 1, field="k_correct")
    pair, score = expand_k_of_n(df["k_correct"].to_numpy(), df["n_samples"].to_numpy(), seed=seed)
    starts = np.cumsum(df["n_samples"].to_numpy()) - df["n_samples"].to_numpy()
    decode = np.arange(pair.size) - np.repeat(starts, df["n_samples"].to_numpy())
    out = pd.DataFrame({
        "dataset": df["task"].to_numpy()[pair],
        "split": np.where(df["split"].to_numpy()[pair] == "test", "test", "train"),
        "query_id": df["qid"].to_numpy()[pair],
        "model": df["model"].to_numpy()[pair],
        "prompt_variant_id": -1,
        "decode_id": decode,
        "observation_type": "decoding_variation",
        "score": score,
        "cost": 0.0,
        "cost_known": False,
        "question": df["question"].to_numpy()[pair],
    })
    return canonicalize(out, source=str(f))
