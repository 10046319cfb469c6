"""The one validation layer: turn any frame of observations into the canonical schema, or fail
naming the file, line and field.

Every reader (DARS, JSONL, CSV, Parquet, the adapters) and every store write goes through
:func:`canonicalize`. It checks, per field: the type (text is a string, numbers are numbers, flags
are booleans), the encoding (valid UTF-8, no lone surrogates), that numbers are finite and in
range (integers fit their DuckDB column), and the enumerations (``split``; ``observation_type`` of
test rows). An error reports up to five offending rows with their line numbers in the source
(``row_numbers``), so a user can open the file at the right place.

Duplicate keys: identical rows (every column equal) collapse to one; rows with the same key and
any differing value are a :class:`~caproute.errors.DataError` naming both places
(:func:`collapse_duplicates`, also used across the files of one DARS directory).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from caproute.data import schema
from caproute.errors import DataError

_MAX_REPORTED = 5
INT32_RANGE = (-(2**31), 2**31 - 1)          # DuckDB INTEGER (prompt_variant_id, decode_id)
TOKEN_MAX = 2**53                             # exact in float64; larger counts are not real
"""Upper bound of token counts (our choice: any count above 2^53 is corrupt data)."""
_BOOL_TEXT_TRUE = {"true", "1"}
_BOOL_TEXT_FALSE = {"false", "0"}


class JSONConstant:
    """``NaN`` / ``Infinity`` / ``-Infinity`` in a JSON line (not valid JSON numbers): kept as a
    marker so the field that holds it is named by the check of that field."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _short(v) -> str:
    if isinstance(v, np.generic):
        v = v.item()
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _fail(mask: np.ndarray, rows: np.ndarray, source: str, field: str, what: str,
          values: pd.Series | list | None = None) -> None:
    """Raise for the rows in ``mask``: the first is named in full (line, field, value), up to four
    more by line."""
    bad = np.flatnonzero(mask)
    if bad.size == 0:
        return

    def got(i: int) -> str:
        if values is None:
            return ""
        return f" (got {_short(values.iloc[i] if isinstance(values, pd.Series) else values[i])})"

    others = bad[1:_MAX_REPORTED]
    more = ""
    if others.size:
        more = f"; also at line/row {', '.join(str(int(rows[i])) for i in others)}"
        if bad.size > others.size + 1:
            more += f" and {bad.size - others.size - 1} more"
    raise DataError(f"{what}{got(bad[0])}{more}", source=source, row=int(rows[bad[0]]), field=field)


def _is_missing(v) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, float | np.floating) and math.isnan(v)


# --------------------------------------------------------------------------------------------
# per-type checks (each returns the cleaned column)
def text_values(col: pd.Series, rows: np.ndarray, source: str, field: str, *, key: bool) -> pd.Series:
    """Strings (integers accepted for key fields, e.g. a numeric query_id), valid UTF-8.

    Key fields must be non-empty; an empty optional text is stored as missing (None), so that
    every format round-trips it the same way.
    """
    n = len(col)
    if isinstance(col.dtype, pd.StringDtype):  # arrow-backed strings are valid UTF-8 by construction
        vals = col.astype(object).where(col.notna(), None)
        empty = (col.fillna("").astype(str).str.len() == 0).to_numpy()
        if key:
            _fail(empty, rows, source, field, "empty value")
            return vals.astype(str)
        return vals.where(~empty, None)
    out = [None] * n
    wrong_type = np.zeros(n, dtype=bool)
    bad_text = np.zeros(n, dtype=bool)
    empty = np.zeros(n, dtype=bool)
    values = col.tolist()
    for i, v in enumerate(values):
        if _is_missing(v):
            empty[i] = True
            continue
        if isinstance(v, str):
            if not v:
                empty[i] = True
                continue
            if not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    bad_text[i] = True
                    continue
            out[i] = v
        elif key and isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_):
            out[i] = str(int(v))
        else:
            wrong_type[i] = True
    _fail(wrong_type, rows, source, field, "must be a string", values)
    _fail(bad_text, rows, source, field, "invalid text (a lone surrogate: not encodable as UTF-8)", values)
    if key:
        _fail(empty, rows, source, field, "empty value")
    return pd.Series(out, index=col.index, dtype=object)


def number_values(col: pd.Series, rows: np.ndarray, source: str, field: str, *, integer: bool = False,
                  lo: float | None = None, hi: float | None = None, required: bool = True) -> np.ndarray:
    """Finite numbers (numeric text accepted, as CSV gives it; booleans refused) in [lo, hi].

    Returns float64 with NaN where an optional value is missing.
    """
    n = len(col)
    if pd.api.types.is_bool_dtype(col.dtype):
        _fail(col.notna().to_numpy(), rows, source, field, "must be a number, not true/false", col)
    if pd.api.types.is_numeric_dtype(col.dtype):
        arr = col.to_numpy(dtype=float, na_value=np.nan)
        present = ~np.isnan(arr)
        nonfinite = np.zeros(n, dtype=bool)
        with np.errstate(invalid="ignore"):
            nonfinite = present & ~np.isfinite(arr)
        values: pd.Series | list = col
    else:
        values = col.tolist()
        arr = np.full(n, np.nan)
        present = np.zeros(n, dtype=bool)
        wrong = np.zeros(n, dtype=bool)
        nonfinite = np.zeros(n, dtype=bool)
        for i, v in enumerate(values):
            if _is_missing(v):
                continue
            present[i] = True
            if isinstance(v, bool | np.bool_):
                wrong[i] = True
            elif isinstance(v, int | np.integer):
                try:
                    arr[i] = float(v)
                except OverflowError:
                    nonfinite[i] = True
            elif isinstance(v, float | np.floating):
                arr[i] = float(v)
            elif isinstance(v, str):
                try:
                    arr[i] = float(v.strip())
                except ValueError:
                    wrong[i] = True
            elif isinstance(v, JSONConstant):
                nonfinite[i] = True
            else:
                wrong[i] = True
        _fail(wrong, rows, source, field, "not a number", values)
        with np.errstate(invalid="ignore"):
            nonfinite |= present & ~np.isfinite(arr)
    _fail(nonfinite, rows, source, field, "not a finite number", values)
    if required:
        _fail(~present, rows, source, field, "missing value")
    ok = present & ~nonfinite
    if integer:
        _fail(ok & (np.mod(np.where(ok, arr, 0.0), 1) != 0), rows, source, field, "not an integer", values)
    rng = f"[{'-inf' if lo is None else _num(lo)}, {'inf' if hi is None else _num(hi)}]"
    if lo is not None:
        _fail(ok & (arr < lo), rows, source, field, f"out of range {rng}", values)
    if hi is not None:
        _fail(ok & (arr > hi), rows, source, field, f"out of range {rng}", values)
    return arr


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def bool_values(col: pd.Series, rows: np.ndarray, source: str, field: str) -> pd.Series:
    """true/false (JSON booleans, 0/1, or the text true/false/1/0 as CSV gives it)."""
    if pd.api.types.is_bool_dtype(col.dtype):
        return col.astype("boolean")
    values = col.tolist()
    out: list = [pd.NA] * len(values)
    wrong = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if _is_missing(v):
            continue
        if isinstance(v, bool | np.bool_ | int | np.integer | float | np.floating) and v in (0, 1):
            out[i] = bool(v)
        elif isinstance(v, str) and v.strip().lower() in _BOOL_TEXT_TRUE | _BOOL_TEXT_FALSE:
            out[i] = v.strip().lower() in _BOOL_TEXT_TRUE
        else:
            wrong[i] = True
    _fail(wrong, rows, source, field, "must be true or false", values)
    return pd.Series(out, index=col.index, dtype="boolean")


def _first_nonempty(df: pd.DataFrame, fields: tuple[str, ...], rows, source) -> pd.Series | None:
    present = [f for f in fields if f in df.columns]
    if not present:
        return None
    out = pd.Series([None] * len(df), index=df.index, dtype=object)
    for f in present:
        col = text_values(df[f], rows, source, f, key=False)
        out = out.where(out.notna(), col)
    return out


# --------------------------------------------------------------------------------------------
def canonicalize(df: pd.DataFrame, *, source: str, row_numbers: np.ndarray | None = None,
                 defaults: dict[str, object] | None = None, dedupe: bool = True) -> pd.DataFrame:
    """Validate ``df`` and return it in the canonical schema (``schema.COLUMN_NAMES`` order).

    ``defaults`` fill required columns a format leaves implicit (e.g. dataset from a folder name).
    With ``dedupe``, identical duplicate keys collapse and conflicting ones raise
    :class:`DataError` (see :func:`collapse_duplicates`); without, every row is kept in order.
    """
    if len(df) == 0:
        raise DataError("no observations (empty input)", source=source)
    rows = np.arange(1, len(df) + 1) if row_numbers is None else np.asarray(row_numbers)
    df = df.reset_index(drop=True)
    out = pd.DataFrame(index=df.index)
    defaults = dict(defaults or {})

    for name in ("dataset", "split"):
        if name in df.columns:
            col = text_values(df[name], rows, source, name, key=False)
            if name in defaults:
                col = col.where(col.notna(), defaults[name])
            out[name] = col
        elif name in defaults:
            out[name] = defaults[name]
        else:
            raise DataError("missing required column", source=source, field=name)
    for name in ("query_id", "model", "score", "cost"):
        if name not in df.columns:
            raise DataError("missing required column", source=source, field=name)

    for name in ("dataset", "split", "query_id", "model"):
        col = out[name] if name in out.columns else df[name]
        out[name] = text_values(col.astype(object), rows, source, name, key=True).astype(str)
    _fail(~out["split"].isin(schema.SPLITS).to_numpy(), rows, source, "split",
          f"split must be one of {schema.SPLITS}", out["split"])

    # optional in the reference format: absent (or null) means the original query / decode 0
    for name, absent in (("prompt_variant_id", -1), ("decode_id", 0)):
        if name in df.columns:
            arr = number_values(df[name], rows, source, name, integer=True, lo=INT32_RANGE[0],
                                hi=INT32_RANGE[1], required=False)
            out[name] = np.where(np.isnan(arr), absent, arr).astype(np.int64)
        else:
            out[name] = absent

    out["score"] = number_values(df["score"], rows, source, "score", lo=0.0, hi=1.0)
    out["cost"] = number_values(df["cost"], rows, source, "cost", lo=0.0)

    out["observation_type"] = _observation_type(df, out, rows, source)

    question = _first_nonempty(df, schema.QUESTION_FIELDS, rows, source)
    out["question"] = question if question is not None else None
    context = _first_nonempty(df, schema.CONTEXT_FIELDS, rows, source)
    out["context"] = context if context is not None else None
    aliases = {"rewrite_text": ("rewrite_text", "input_question"),
               "response_text": ("response_text", "output_text", "response"),
               "input_tokens": ("input_tokens", "prompt_tokens"),
               "output_tokens": ("output_tokens", "completion_tokens"),
               "latency_s": ("latency_s",), "cost_known": ("cost_known",), "score_source": ("score_source",)}
    for name, fields in aliases.items():
        src = next((f for f in fields if f in df.columns), None)
        if src is None:
            out[name] = None
            continue
        if name in schema.TEXT_COLUMNS:   # per row: the first non-empty of the aliases
            out[name] = _first_nonempty(df, fields, rows, source)
            continue
        col = df[src]
        if name in schema.INT_COLUMNS:
            arr = number_values(col, rows, source, src, integer=True, lo=0, hi=TOKEN_MAX, required=False)
            out[name] = pd.array(arr, dtype="Int64")
        elif name in schema.FLOAT_COLUMNS:
            out[name] = number_values(col, rows, source, src, lo=0.0, required=False)
        else:
            out[name] = bool_values(col, rows, source, src)
    out = out[list(schema.COLUMN_NAMES)]
    if not dedupe:
        return out
    return collapse_duplicates(out, sources=np.full(len(out), source, dtype=object), rows=rows)


def _observation_type(df: pd.DataFrame, out: pd.DataFrame, rows: np.ndarray, source: str) -> pd.Series:
    """Aliases mapped; missing values inferred from prompt_variant_id (>= 0 rewrite view).

    Test rows must name a view (``schema.OBSERVATION_TYPES``); training rows may carry any value
    or none (the DARS reference format), which is kept as given.
    """
    inferred = pd.Series(np.where(out["prompt_variant_id"].to_numpy() >= 0, schema.PROMPT_VARIATION,
                                  schema.DECODING_VARIATION), index=out.index, dtype=object)
    if "observation_type" not in df.columns:
        return inferred
    ot = text_values(df["observation_type"], rows, source, "observation_type", key=False)
    ot = ot.map(lambda v: schema.OBSERVATION_TYPE_ALIASES.get(v, v) if v is not None else None)
    ot = ot.where(ot.notna(), inferred)
    bad = (out["split"] == "test").to_numpy() & ~ot.isin(schema.OBSERVATION_TYPES).to_numpy()
    _fail(bad, rows, source, "observation_type",
          f"unknown observation_type of a test row (expected one of {schema.OBSERVATION_TYPES})", ot)
    return ot.astype(object)


def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Element-wise equality where missing == missing."""
    na_a, na_b = a.isna().to_numpy(), b.isna().to_numpy()
    eq = [bool(na or nb or x == y) for x, y, na, nb in zip(a.tolist(), b.tolist(), na_a, na_b, strict=True)]
    return (na_a == na_b) & np.asarray(eq, dtype=bool)


def collapse_duplicates(df: pd.DataFrame, *, sources: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
    """Collapse rows repeated with the same key and identical values; raise on any difference.

    ``sources[i]``/``rows[i]`` say where row ``i`` came from (file and line), so a conflict between
    two files of one import names both.
    """
    key = list(schema.KEY_COLUMNS)
    dup = df.duplicated(key, keep=False).to_numpy()
    if not dup.any():
        return df
    idx = np.flatnonzero(dup)
    sub = df.iloc[idx]
    first_pos = sub.groupby(key, sort=False).cumcount().to_numpy() == 0
    # first row of each key group, broadcast to every member
    firsts = sub[first_pos].set_index(key)
    ref = firsts.reindex(pd.MultiIndex.from_frame(sub[key])).reset_index(drop=True)
    mine = sub.reset_index(drop=True)
    values = [c for c in schema.COLUMN_NAMES if c not in key and c in df.columns]
    for c in values:
        same = _same(mine[c], ref[c])
        if same.all():
            continue
        j = int(np.flatnonzero(~same)[0])
        k = mine.loc[j, key]
        members = np.flatnonzero((sub[key].reset_index(drop=True) == k).all(axis=1).to_numpy())
        where = "; ".join(f"{sources[idx[m]]} line {int(rows[idx[m]])}" for m in members[:_MAX_REPORTED])
        i0 = idx[members[0]]
        raise DataError(
            f"conflicting duplicate key ({', '.join(f'{n}={k[n]}' for n in key)}): {where} differ in '{c}' "
            f"({_short(ref.loc[j, c])} vs {_short(mine.loc[j, c])})",
            source=str(sources[i0]), row=int(rows[i0]), field=c)
    return df[~df.duplicated(key, keep="first")].reset_index(drop=True)



# --------------------------------------------------------------------------------------------
# the same checks in SQL, for Parquet data streamed through DuckDB (``supervise --streaming``)
_SQL_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("dataset", "dataset IS NOT NULL AND length(CAST(dataset AS VARCHAR)) > 0", "empty value"),
    ("split", "split IN ('train', 'test')", f"split must be one of {schema.SPLITS}"),
    ("query_id", "query_id IS NOT NULL AND length(CAST(query_id AS VARCHAR)) > 0", "empty value"),
    ("model", "model IS NOT NULL AND length(CAST(model AS VARCHAR)) > 0", "empty value"),
    ("score", "score IS NOT NULL AND isfinite(score) AND score BETWEEN 0 AND 1",
     "missing, not finite, or out of range [0, 1]"),
    ("cost", "cost IS NOT NULL AND isfinite(cost) AND cost >= 0", "missing, not finite, or negative"),
    ("prompt_variant_id", f"prompt_variant_id IS NULL OR (prompt_variant_id = round(prompt_variant_id) AND "
                          f"prompt_variant_id BETWEEN {INT32_RANGE[0]} AND {INT32_RANGE[1]})",
     "not a 32-bit integer"),
    ("decode_id", f"decode_id IS NULL OR (decode_id = round(decode_id) AND "
                  f"decode_id BETWEEN {INT32_RANGE[0]} AND {INT32_RANGE[1]})", "not a 32-bit integer"),
)


def validate_parquet_sql(files: str, *, source: str) -> None:
    """Check Parquet observations with DuckDB, without loading them: the rules of
    :func:`canonicalize` for the fields supervision reads. ``files`` is a path or glob; the first
    bad row is named by file, row (1-based) and field."""
    import duckdb

    con = duckdb.connect()
    try:
        rel = ("read_parquet('" + files.replace("'", "''")
               + "', union_by_name = true, filename = true, file_row_number = true)")
        try:
            cols = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()}
        except duckdb.Error as e:
            raise DataError(f"cannot read Parquet: {str(e).splitlines()[0]}", source=source) from None
        for name in ("dataset", "split", "query_id", "model", "score", "cost"):
            if name not in cols:
                raise DataError("missing required column", source=source, field=name)
        for field, ok, what in _SQL_CHECKS:
            if field not in cols:
                continue
            try:
                bad = con.execute(f"SELECT filename, file_row_number, CAST({field} AS VARCHAR) FROM {rel} "
                                  f"WHERE NOT coalesce({ok}, false) LIMIT 1").fetchall()
            except duckdb.Error:
                raise DataError(f"wrong column type {cols[field]}", source=source, field=field) from None
            if bad:
                f, r, v = bad[0]
                raise DataError(f"{what} (got {v!r})", source=f, row=int(r) + 1, field=field)
    finally:
        con.close()
