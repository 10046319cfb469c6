"""Traffic samples for calibration: observations (with outcomes) or a JSONL file of requests.

- :func:`sample_from_observations`: one text per query (``feature_text(question, context)``) and the
  *observed* mean quality and mean raw USD cost of every (query, model) pair, and its mean
  ``latency_s`` when every pair has one.
- :func:`read_requests`: a JSONL file, one request per line: ``{"messages": [...]}`` (a chat, routed
  as the server would), or ``{"input": "..."}`` / ``{"prompt": ...}`` / ``{"text": ...}`` /
  ``{"question": ...}``. No outcomes: calibration then uses the router's predictions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from caproute.errors import DataError
from caproute.serve.conversation import routing_text

TEXT_KEYS = ("input", "prompt", "text", "question")


@dataclass
class TrafficSample:
    texts: list[str]
    source: str
    quality: np.ndarray | None = None  # (n, m) observed mean score, router model order
    cost_usd: np.ndarray | None = None  # (n, m) observed mean raw cost (USD)
    query_ids: list[str] | None = None
    latency: np.ndarray | None = None  # (n, m) observed mean latency_s (None unless known for every pair)


def sample_from_observations(obs: pd.DataFrame, models, *, source: str) -> TrafficSample:
    """Observed outcomes of every (query, model) pair, ordered by query id and ``models``."""
    from caproute.features.text import query_texts

    models = list(models)
    if len(obs) == 0:
        raise DataError("no observations in the traffic sample", source=source)
    missing_models = sorted(set(models) - set(obs["model"].astype(str).unique()))
    if missing_models:
        raise DataError(
            f"the sample has no observations of the router's models {missing_models}",
            source=source,
            field="model",
        )
    obs = obs.assign(query_id=obs["query_id"].astype(str), model=obs["model"].astype(str))
    obs = obs[obs["model"].isin(models)]
    cols = ["score", "cost"] + (["latency_s"] if "latency_s" in obs.columns else [])
    agg = obs.groupby(["query_id", "model"], sort=True)[cols].mean()
    qids = sorted(obs["query_id"].unique())
    agg = agg.reindex(pd.MultiIndex.from_product([qids, models], names=["query_id", "model"]))
    if agg["score"].isna().any():
        q, m = agg.index[agg["score"].isna().to_numpy()][0]
        raise DataError(
            f"query '{q}' has no observation of model '{m}' (every query needs every model)",
            source=source,
            field="model",
        )
    _, texts = query_texts(obs, qids)
    n, m = len(qids), len(models)
    latency = agg["latency_s"].to_numpy(float).reshape(n, m) if "latency_s" in agg.columns else None
    if latency is not None and not np.isfinite(latency).all():
        latency = None   # some pair has no latency: calibration uses the predicted latency instead
    return TrafficSample(
        texts, source, agg["score"].to_numpy().reshape(n, m), agg["cost"].to_numpy().reshape(n, m), qids, latency
    )


def read_requests(
    path: str | os.PathLike, *, conversation: str = "last_user", max_chars: int = 4000
) -> TrafficSample:
    """Texts of a JSONL request file; errors name the file, line and field."""
    p = Path(path)
    if not p.is_file():
        raise DataError("traffic sample not found", source=str(p))
    from caproute.data.formats import read_jsonl_records

    texts = []
    records, lines = read_jsonl_records(p)   # bytes, JSON, NaN and surrogates named by line and field
    for obj, i in zip(records, lines.tolist(), strict=True):
        if "messages" in obj:
            msgs = obj["messages"]
            if not isinstance(msgs, list) or not msgs or not all(isinstance(x, dict) for x in msgs):
                raise DataError(
                    "must be a non-empty list of message objects", source=str(p), row=i, field="messages"
                )
            texts.append(routing_text(msgs, conversation, max_chars))
            continue
        key = next((k for k in TEXT_KEYS if k in obj), None)
        if key is None or not isinstance(obj[key], str) or not obj[key].strip():
            raise DataError(
                f"needs 'messages' or a non-empty string in one of {list(TEXT_KEYS)}",
                source=str(p),
                row=i,
                field=key or "messages",
            )
        texts.append(obj[key][-max_chars:])
    if not texts:
        raise DataError("the traffic sample is empty", source=str(p))
    return TrafficSample(texts, str(p))
