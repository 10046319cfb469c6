"""Reports written after a collection: scoring validity (paper App. D.2) and the rewrite review."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from caproute.collect.config import TaskConfig
from caproute.collect.ledger import RunStats
from caproute.collect.scorers import ContextScorer, Scorer, get_scorer
from caproute.data import schema
from caproute.data.collect_tables import read_gold, read_rewrite_attempts, read_score_details
from caproute.data.store import ObservationStore


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
    at, rw = read_rewrite_attempts(con, dataset)
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
        gold = read_gold(store.connection, dataset)
        review = rewrite_review(store.connection, dataset)
        scorer = get_scorer(task.scorer, **task.scorer_args)
        details = (
            read_score_details(store.connection, dataset)
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
