"""The text a router featurises for each query: ``feature_text(question, context)`` (§A.5)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from caproute.data.schema import feature_text
from caproute.errors import DataError


def query_texts(obs: pd.DataFrame, query_ids=None) -> tuple[np.ndarray, list[str]]:
    """One feature text per query of ``obs`` (the first non-empty question / context of its rows).

    Returns (query_ids, texts), sorted by query id unless ``query_ids`` gives the order.
    """
    if "question" not in obs.columns:
        raise DataError("observations have no 'question' column: routers need the query text",
                        source="observations", field="question")
    cols = ["query_id", "question"] + (["context"] if "context" in obs.columns else [])
    rows = obs[cols].copy()
    rows = rows[rows["question"].notna() & (rows["question"].astype(str).str.strip() != "")]
    first = rows.drop_duplicates("query_id").set_index("query_id")
    order = np.asarray(sorted(obs["query_id"].unique()) if query_ids is None else query_ids)
    missing = [q for q in order if q not in first.index]
    if missing:
        raise DataError(f"{len(missing)} queries have no question text, e.g. {missing[:3]}",
                        source="observations", field="question")
    sub = first.loc[order]
    ctx = sub["context"] if "context" in sub.columns else [None] * len(sub)
    texts = [feature_text(str(q), c if isinstance(c, str) and c else None)
             for q, c in zip(sub["question"], ctx, strict=True)]
    return order, texts
