"""Build gold gains and preference labels from scored observations (a store or a DARS file).

Gold gain of a query (model pair primary p, alternative a): the difference of the two models'
mean scores over all their observations of the query, mu_q(p) - mu_q(a) (the DARS mean quality;
in [-1, 1]). Queries where either model has no observation are not items; their number is
recorded in ``meta['queries_missing_a_model']``.

Preference labels come from one of:

- a judge file (:func:`read_judge_labels`): columns ``query_id`` and ``label`` (verdict code
  1 = primary better, 2 = alternative better, 0 = tie, empty = no verdict) or ``gain`` (a number,
  primary minus alternative). Queries without a judge row get NaN (counted, kept);
- a simulated judge (:class:`SimulatedJudge`), documented choice: the judge sees ONE observation
  of each model (a single-shot comparison, seeded) and answers
  y = sign(s_p - s_a + bias + length_bias * (log1p(tokens_p) - log1p(tokens_a)) + noise_sd * z),
  z ~ N(0, 1), with 0 (tie) exactly when the argument is 0. ``bias`` > 0 favours the primary
  (position/self-preference bias), ``length_bias`` > 0 favours the longer answer (verbosity
  bias; needs ``output_tokens``, treated as 0 where unknown and counted). The judge's bias
  relative to the gold gain is then known by construction, which makes it a test bed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from caproute.causal.labels import PairwiseGains, verdict_to_gain
from caproute.data.schema import feature_text
from caproute.errors import DataError


@dataclass(frozen=True)
class SimulatedJudge:
    """A documented, seeded stand-in for an LLM judge (see the module docstring)."""

    bias: float = 0.0
    length_bias: float = 0.0
    noise_sd: float = 0.0
    seed: int = 42

    @property
    def name(self) -> str:
        return f"simulated(bias={self.bias:g},length_bias={self.length_bias:g},noise_sd={self.noise_sd:g})"


def read_judge_labels(path: str | os.PathLike) -> pd.DataFrame:
    """A judge file (CSV or Parquet) as a frame with columns query_id, gain (NaN = no verdict)."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", source=str(path))
    try:
        df = pd.read_csv(path, dtype={"query_id": str}) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read ({type(e).__name__}: {e})", source=str(path)) from None
    line0 = 2 if path.suffix.lower() == ".csv" else 1  # CSV line of the first data row
    if "query_id" not in df.columns:
        raise DataError("missing column", source=str(path), field="query_id")
    if "label" in df.columns:
        try:
            gain = verdict_to_gain(df["label"], source=str(path), field="label")
        except DataError as e:
            raise DataError(e.reason, source=str(path), row=e.row + line0 - 1, field="label") from None
    elif "gain" in df.columns:
        gain = pd.to_numeric(df["gain"], errors="coerce").to_numpy(float)
        bad = np.isnan(gain) & df["gain"].notna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{df['gain'].iloc[i]!r} is not a number", source=str(path), row=i + line0,
                            field="gain")
    else:
        raise DataError("needs a 'label' (1/2/0) or a 'gain' column", source=str(path), field="label")
    qid = df["query_id"].astype(str)
    dup = qid.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"duplicate query_id {qid.iloc[i]!r}", source=str(path), row=i + line0, field="query_id")
    return pd.DataFrame({"query_id": qid.to_numpy(), "gain": gain})


def gains_from_observations(obs: pd.DataFrame, primary: str, alternative: str, *,
                            judge: pd.DataFrame | SimulatedJudge | None = None,
                            judge_name: str = "judge") -> PairwiseGains:
    """Items (one per query with both models) with the gold gain and a preference gain.

    ``obs``: canonical observations of ONE dataset; ``judge``: a frame from
    :func:`read_judge_labels`, a :class:`SimulatedJudge`, or None (= ``SimulatedJudge()``).
    """
    if primary == alternative:
        raise DataError("primary and alternative must differ", source="--primary")
    if obs["dataset"].nunique() != 1:
        raise DataError(f"pass observations of one dataset, got {sorted(obs['dataset'].unique())}",
                        source="observations")
    for m, opt in ((primary, "--primary"), (alternative, "--alternative")):
        if not (obs["model"] == m).any():
            raise DataError(f"model '{m}' has no observations (models: {sorted(obs['model'].unique())})",
                            source=opt)
    dataset = str(obs["dataset"].iloc[0])
    sub = obs[obs["model"].isin([primary, alternative])]
    means = sub.groupby(["query_id", "model"])["score"].mean().unstack("model")
    complete = means[[primary, alternative]].notna().all(axis=1)
    queries = means.index[complete].astype(str)
    gold = (means.loc[complete, primary] - means.loc[complete, alternative]).to_numpy(float)
    first = sub.drop_duplicates("query_id").set_index("query_id")
    context = first["context"] if "context" in first.columns else pd.Series(None, index=first.index)
    text = [feature_text(str(first.at[q, "question"]) if "question" in first.columns else str(q),
                         context.get(q) if isinstance(context.get(q), str) else None) for q in means.index[complete]]
    meta = {"dataset": dataset, "queries_missing_a_model": int((~complete).sum())}
    judge = SimulatedJudge() if judge is None else judge
    if isinstance(judge, SimulatedJudge):
        pref, extra = simulate_judge(sub[sub["query_id"].astype(str).isin(set(queries))], primary, alternative,
                                     judge, queries)
        meta.update(extra)
        pref_source = judge.name
    else:
        lab = judge.set_index("query_id")["gain"]
        pref = lab.reindex(queries).to_numpy(float)
        meta["judge_rows_unmatched"] = int((~lab.index.isin(queries)).sum())
        pref_source = judge_name
    items = pd.DataFrame({"item_id": [f"{dataset}:{q}:{primary}|{alternative}" for q in queries],
                          "query_id": queries, "text": text, "model_1": primary, "model_2": alternative,
                          "gold": gold, "pref": pref})
    return PairwiseGains(items, "mean_score_difference", pref_source, meta)


def simulate_judge(obs: pd.DataFrame, primary: str, alternative: str, judge: SimulatedJudge,
                   queries) -> tuple[np.ndarray, dict]:
    """Single-shot simulated verdicts (+1 / 0 / -1) for ``queries`` (see the module docstring)."""
    rng = np.random.default_rng(judge.seed)
    obs = obs.assign(query_id=obs["query_id"].astype(str))
    # one observation per (query, model): a seeded random pick, independent of row order
    obs = obs.sort_values(["query_id", "model", "prompt_variant_id", "decode_id", "observation_type"],
                          kind="stable").reset_index(drop=True)
    obs["_r"] = rng.random(len(obs))
    pick = obs.loc[obs.groupby(["query_id", "model"])["_r"].idxmin()].set_index(["query_id", "model"])
    qs = pd.Index(queries)
    s_p = pick.xs(primary, level="model")["score"].reindex(qs).to_numpy(float)
    s_a = pick.xs(alternative, level="model")["score"].reindex(qs).to_numpy(float)
    arg = s_p - s_a + judge.bias
    unknown_tokens = 0
    if judge.length_bias != 0:
        if "output_tokens" in pick.columns:
            t_p = pick.xs(primary, level="model")["output_tokens"].reindex(qs).to_numpy(float)
            t_a = pick.xs(alternative, level="model")["output_tokens"].reindex(qs).to_numpy(float)
        else:
            t_p = t_a = np.full(len(qs), np.nan)
        unknown = np.isnan(t_p) | np.isnan(t_a)
        unknown_tokens = int(unknown.sum())
        arg = arg + judge.length_bias * np.where(unknown, 0.0, np.log1p(np.nan_to_num(t_p)) - np.log1p(np.nan_to_num(t_a)))
    if judge.noise_sd > 0:
        arg = arg + judge.noise_sd * rng.standard_normal(len(qs))
    return np.sign(arg), {"simulated_judge": judge.name, "unknown_output_tokens": unknown_tokens}
