"""The request log that ``caproute replay`` reads: one row per routed request (docs/replay.md).

JSONL (one JSON object per line) or Parquet (same columns). Fields:

- ``request_id`` (string, unique), ``query`` (text; or ``features``: a list of numbers in the
  candidates' feature space), ``candidates`` (the models the logging policy could choose from),
  ``chosen`` (one of them), ``propensity`` (its probability under the logging policy, in (0, 1]),
  ``reward`` (the outcome observed for the chosen model, a finite number);
- optional ``propensities`` ({model: probability} over ``candidates``, summing to 1; when absent,
  a propensity below 1 means every listed candidate could have been chosen, and a propensity of 1
  that only the chosen one could), ``policy_version`` (string), ``lambda`` and ``beta`` (numbers
  >= 0: the cost and risk weights the serving router decided at, and the reward's lambda; replay
  scores every candidate at its row's lambda/beta, a candidate's own saved values where absent),
  ``lambda_t`` (number >= 0: the PROPOSED latency weight the request was routed at; absent: 0, the
  paper's utility).
  Other fields are ignored.

:func:`read_request_log` is the one validating reader: every problem is a
:class:`~caproute.errors.DataError` naming the file, line (1-based; the row for Parquet) and field.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caproute.errors import DataError

REQUIRED = ("request_id", "candidates", "chosen", "propensity", "reward")
SUM_TOL = 1e-6


@dataclass
class RequestLog:
    """A validated request log: n requests over the models ``models`` (sorted union of every
    row's candidates). ``chosen`` (n,) model indices; ``support`` (n, m): True where the logging
    policy could have chosen the model; ``texts`` or ``features`` (n, d) hold the queries."""

    source: str
    request_ids: list[str]
    models: tuple[str, ...]
    chosen: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray
    support: np.ndarray
    texts: list[str] | None = None
    features: np.ndarray | None = None
    policy_versions: list[str | None] | None = None
    #: per row, the lambda / beta the request was routed and rewarded at (None: not logged)
    lams: list[float | None] | None = None
    betas: list[float | None] | None = None
    #: per row, the latency weight lambda_t the request was routed at (None: not logged, i.e. 0)
    lam_ts: list[float | None] | None = None

    @property
    def n(self) -> int:
        return len(self.request_ids)


def _records(path: Path):
    """(line or row number, dict) for each record of a JSONL or Parquet file."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1":
        import pandas as pd

        try:
            df = pd.read_parquet(path)
        except Exception as e:
            raise DataError(f"cannot read Parquet: {e}", source=str(path)) from None
        for i, rec in enumerate(df.to_dict("records"), start=1):
            yield i, {k: _plain(v) for k, v in rec.items()}
        return
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError("is not UTF-8 text", source=str(path), row=i) from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON ({e.msg})", source=str(path), row=i) from None
            if not isinstance(rec, dict):
                raise DataError("each line must be a JSON object", source=str(path), row=i)
            yield i, rec


def _plain(v):
    """Parquet values as JSON-like Python values (arrays to lists, NaN/None to None)."""
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items() if x is not None}
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _number(rec, key, src, row) -> float:
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise DataError(f"must be a finite number, got {v!r}", source=src, row=row, field=key)
    return float(v)


def _text(rec, key, src, row) -> str:
    v = rec.get(key)
    if not isinstance(v, str) or not v.strip():
        raise DataError(f"must be a non-empty string, got {v!r}", source=src, row=row, field=key)
    return v


def read_request_log(path: str | os.PathLike) -> RequestLog:
    """Read and validate a request log (JSONL or Parquet; see the module docstring)."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise DataError("no such request log file", source=src)
    ids, cands, chosen, prop, reward, texts, feats, versions, props = [], [], [], [], [], [], [], [], []
    lams: list[float | None] = []
    betas: list[float | None] = []
    lam_ts: list[float | None] = []
    seen: dict[str, int] = {}
    for row, rec in _records(path):
        for key in REQUIRED:
            if rec.get(key) is None:
                raise DataError("missing", source=src, row=row, field=key)
        rid = rec["request_id"]
        if not isinstance(rid, str | int) or isinstance(rid, bool) or str(rid).strip() == "":
            raise DataError(f"must be a string, got {rid!r}", source=src, row=row, field="request_id")
        rid = str(rid)
        if rid in seen:
            raise DataError(f"request '{rid}' repeated (first on line {seen[rid]})", source=src, row=row,
                            field="request_id")
        seen[rid] = row
        c = rec["candidates"]
        if (not isinstance(c, list) or not c or not all(isinstance(x, str) and x for x in c)
                or len(set(c)) != len(c)):
            raise DataError(f"must be a non-empty list of distinct model names, got {c!r}", source=src, row=row,
                            field="candidates")
        ch = _text(rec, "chosen", src, row)
        if ch not in c:
            raise DataError(f"'{ch}' is not one of the candidates {c}", source=src, row=row, field="chosen")
        p = _number(rec, "propensity", src, row)
        if not 0.0 < p <= 1.0:
            raise DataError(f"must lie in (0, 1], got {p}", source=src, row=row, field="propensity")
        r = _number(rec, "reward", src, row)
        has_q, has_f = rec.get("query") is not None, rec.get("features") is not None
        if not (has_q or has_f):
            raise DataError("needs the query text or its features", source=src, row=row, field="query")
        if has_q:
            texts.append(_text(rec, "query", src, row))
        if has_f:
            f = rec["features"]
            if (not isinstance(f, list) or not f or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                                             and math.isfinite(x) for x in f)):
                raise DataError("must be a non-empty list of finite numbers", source=src, row=row, field="features")
            feats.append(f)
        if (texts and len(texts) != len(ids) + 1) or (feats and len(feats) != len(ids) + 1):
            raise DataError("every row must carry the same query field (query or features) as the first",
                            source=src, row=row, field="query" if texts else "features")
        pp = rec.get("propensities")
        if pp is not None:
            if not isinstance(pp, dict) or set(pp) != set(c) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1
                    for v in pp.values()):
                raise DataError("must map every candidate to a probability in [0, 1]", source=src, row=row,
                                field="propensities")
            if abs(sum(pp.values()) - 1.0) > SUM_TOL:
                raise DataError(f"must sum to 1, got {sum(pp.values()):.6g}", source=src, row=row,
                                field="propensities")
            if abs(pp[ch] - p) > SUM_TOL:
                raise DataError(f"gives the chosen model {pp[ch]}, the propensity field {p}", source=src, row=row,
                                field="propensities")
        v = rec.get("policy_version")
        if v is not None and not isinstance(v, str | int):
            raise DataError(f"must be a string, got {v!r}", source=src, row=row, field="policy_version")
        for key, out in (("lambda", lams), ("beta", betas), ("lambda_t", lam_ts)):
            if rec.get(key) is None:
                out.append(None)
                continue
            x = _number(rec, key, src, row)
            if x < 0:
                raise DataError(f"must be >= 0, got {x}", source=src, row=row, field=key)
            out.append(x)
        ids.append(rid)
        cands.append(c)
        chosen.append(ch)
        prop.append(p)
        reward.append(r)
        versions.append(None if v is None else str(v))
        props.append(pp)
    if not ids:
        raise DataError("holds no requests", source=src)
    if feats and len({len(f) for f in feats}) > 1:
        raise DataError("feature vectors differ in length", source=src, field="features")
    models = tuple(sorted({m for c in cands for m in c}))
    index = {m: j for j, m in enumerate(models)}
    support = np.zeros((len(ids), len(models)), dtype=bool)
    for i, (c, ch, p, pp) in enumerate(zip(cands, chosen, prop, props, strict=True)):
        if pp is not None:
            support[i, [index[m] for m, v in pp.items() if v > 0]] = True
        elif p < 1.0:
            support[i, [index[m] for m in c]] = True
        support[i, index[ch]] = True
    return RequestLog(
        source=src, request_ids=ids, models=models,
        chosen=np.array([index[c] for c in chosen], dtype=np.intp),
        propensity=np.asarray(prop, dtype=np.float64), reward=np.asarray(reward, dtype=np.float64),
        support=support, texts=texts or None,
        features=np.asarray(feats, dtype=np.float32) if feats else None,
        policy_versions=versions if any(v is not None for v in versions) else None,
        lams=lams if any(v is not None for v in lams) else None,
        betas=betas if any(v is not None for v in betas) else None,
        lam_ts=lam_ts if any(v is not None for v in lam_ts) else None)
