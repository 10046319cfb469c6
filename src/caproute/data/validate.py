"""Turn any frame of observations into the canonical schema, or fail naming the row and field.

Checks are vectorised; an error reports up to five offending rows with their line numbers in
the source (``row_numbers``), so a user can open the file at the right place.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from caproute.data import schema
from caproute.errors import DataError

_MAX_REPORTED = 5


def _fail(mask: np.ndarray, rows: np.ndarray, source: str, field: str, what: str,
          values: pd.Series | None = None) -> None:
    bad = np.flatnonzero(mask)
    if bad.size == 0:
        return
    first = bad[:_MAX_REPORTED]
    shown = []
    for i in first:
        v = "" if values is None else f" (got {values.iloc[i]!r})"
        shown.append(f"{int(rows[i])}{v}")
    more = f" and {bad.size - first.size} more" if bad.size > first.size else ""
    raise DataError(f"{what} at line/row {', '.join(shown)}{more}", source=source,
                    row=int(rows[first[0]]), field=field)


def _first_nonempty(df: pd.DataFrame, fields: tuple[str, ...]) -> pd.Series | None:
    present = [f for f in fields if f in df.columns]
    if not present:
        return None
    out = pd.Series([None] * len(df), index=df.index, dtype=object)
    for f in present:
        col = df[f]
        empty = out.isna() | (out.astype(str) == "")
        ok = col.notna() & (col.astype(str) != "")
        out = out.where(~(empty & ok), col)
    return out


def canonicalize(df: pd.DataFrame, *, source: str, row_numbers: np.ndarray | None = None,
                 defaults: dict[str, object] | None = None) -> pd.DataFrame:
    """Validate ``df`` and return it in the canonical schema (``schema.COLUMN_NAMES`` order).

    ``defaults`` fill required columns a format leaves implicit (e.g. dataset from a folder name).
    Identical duplicate keys are collapsed; conflicting ones raise :class:`DataError`.
    """
    if len(df) == 0:
        raise DataError("no observations (empty input)", source=source)
    rows = np.arange(1, len(df) + 1) if row_numbers is None else np.asarray(row_numbers)
    df = df.reset_index(drop=True)
    out = pd.DataFrame(index=df.index)
    defaults = dict(defaults or {})

    for name in ("dataset", "split"):
        if name in df.columns:
            col = df[name]
            if name in defaults:
                col = col.where(col.notna() & (col.astype(str) != ""), defaults[name])
            out[name] = col
        elif name in defaults:
            out[name] = defaults[name]
        else:
            raise DataError("missing required column", source=source, field=name)
    for name in ("query_id", "model", "score", "cost"):
        if name not in df.columns:
            raise DataError("missing required column", source=source, field=name)
        out[name] = df[name]

    for name in ("dataset", "split", "query_id", "model"):
        missing = out[name].isna().to_numpy() | (out[name].astype(str).str.len() == 0).to_numpy()
        _fail(missing, rows, source, name, "empty value")
        out[name] = out[name].astype(str)
    _fail(~out["split"].isin(schema.SPLITS).to_numpy(), rows, source, "split",
          f"split must be one of {schema.SPLITS}", out["split"])

    for name in ("prompt_variant_id", "decode_id"):
        if name in df.columns:
            num = pd.to_numeric(df[name], errors="coerce")
            bad = num.isna().to_numpy() | (num.to_numpy(dtype=float, na_value=np.nan) % 1 != 0)
            _fail(bad, rows, source, name, "not an integer", df[name])
            out[name] = num.astype(np.int64)
        else:
            out[name] = -1 if name == "prompt_variant_id" else 0

    for name in ("score", "cost"):
        num = pd.to_numeric(out[name], errors="coerce")
        _fail(num.isna().to_numpy() & out[name].notna().to_numpy(), rows, source, name,
              "not a number", out[name])
        arr = num.to_numpy(dtype=float, na_value=np.nan)
        _fail(~np.isfinite(arr), rows, source, name, "missing or non-finite value", out[name])
        out[name] = arr
    _fail((out["score"] < 0).to_numpy() | (out["score"] > 1).to_numpy(), rows, source, "score",
          "score out of range [0, 1]", out["score"])
    _fail((out["cost"] < 0).to_numpy(), rows, source, "cost", "negative cost", out["cost"])

    if "observation_type" in df.columns:
        ot = df["observation_type"].astype(object)
        ot = ot.where(ot.notna() & (ot.astype(str) != ""), None)
        ot = ot.map(lambda v: schema.OBSERVATION_TYPE_ALIASES.get(v, v) if v is not None else None)
    else:
        ot = pd.Series([None] * len(df), dtype=object)
    inferred = np.where(out["prompt_variant_id"].to_numpy() >= 0, schema.PROMPT_VARIATION,
                        schema.DECODING_VARIATION)
    ot = ot.where(ot.notna(), pd.Series(inferred, index=ot.index))
    _fail(~ot.isin(schema.OBSERVATION_TYPES).to_numpy(), rows, source, "observation_type",
          f"unknown observation_type (expected one of {schema.OBSERVATION_TYPES})", ot)
    out["observation_type"] = ot.astype(str)

    question = _first_nonempty(df, schema.QUESTION_FIELDS)
    out["question"] = question if question is not None else None
    context = _first_nonempty(df, schema.CONTEXT_FIELDS)
    out["context"] = context if context is not None else None
    aliases = {"rewrite_text": ("rewrite_text", "input_question"),
               "response_text": ("response_text", "output_text", "response"),
               "input_tokens": ("input_tokens", "prompt_tokens"),
               "output_tokens": ("output_tokens", "completion_tokens"),
               "latency_s": ("latency_s",), "cost_known": ("cost_known",)}
    for name, fields in aliases.items():
        src = next((f for f in fields if f in df.columns), None)
        if src is None:
            out[name] = None
            continue
        col = df[src]
        if name in schema.INT_COLUMNS:
            num = pd.to_numeric(col, errors="coerce")
            _fail(num.isna().to_numpy() & col.notna().to_numpy(), rows, source, src, "not a number", col)
            _fail((num < 0).to_numpy(), rows, source, src, "negative value", col)
            out[name] = num.astype("Int64")
        elif name in schema.FLOAT_COLUMNS:
            num = pd.to_numeric(col, errors="coerce")
            _fail(num.isna().to_numpy() & col.notna().to_numpy(), rows, source, src, "not a number", col)
            out[name] = num.astype(float)
        elif name in schema.BOOL_COLUMNS:
            out[name] = col.astype("boolean")
        else:
            out[name] = col.where(col.notna(), None)
    if question is not None and "input_question" in df.columns and "original_question" in df.columns:
        # The reference format keeps the rewrite in input_question and the original in original_question.
        out["rewrite_text"] = df["input_question"].where(df["input_question"].notna(), None)

    out = out[list(schema.COLUMN_NAMES)]
    return drop_identical_duplicates(out, rows=rows, source=source)


def drop_identical_duplicates(df: pd.DataFrame, *, rows: np.ndarray, source: str) -> pd.DataFrame:
    """Collapse rows repeated with the same key and values; raise on conflicting duplicates."""
    key = list(schema.KEY_COLUMNS)
    dup = df.duplicated(key, keep=False).to_numpy()
    if not dup.any():
        return df
    sub = df.loc[dup, key + ["score", "cost"]]
    n_values = sub.groupby(key, sort=False)[["score", "cost"]].transform("nunique").max(axis=1)
    conflicting = np.zeros(len(df), dtype=bool)
    conflicting[np.flatnonzero(dup)] = (n_values > 1).to_numpy()
    if conflicting.any():
        i = int(np.flatnonzero(conflicting)[0])
        k = df.loc[i, key]
        same = df[(df[key] == k).all(axis=1)].index.to_numpy()
        lines = ", ".join(str(int(rows[j])) for j in same[:_MAX_REPORTED])
        raise DataError(
            f"conflicting duplicate key {dict(k)}: rows at lines {lines} have different score/cost",
            source=source, row=int(rows[i]), field="score")
    return df[~df.duplicated(key, keep="first")].reset_index(drop=True)
