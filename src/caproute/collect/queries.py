"""The queries file a collection runs on: one query per row with its gold answer.

Columns: ``query_id`` (or ``id``), ``question``, ``answer``; optional ``context`` (passage) and
``split`` (``train``/``test``; otherwise assigned with ``--split-test``). JSONL, CSV or Parquet.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from caproute.errors import DataError

QUERY_COLUMNS = ("query_id", "split", "question", "context", "answer")


def stable_int(*parts, bits: int = 31) -> int:
    """A deterministic non-negative integer from ``parts`` (seeds and splits survive restarts)."""
    h = hashlib.sha256("||".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") % (1 << bits)


def assign_splits(query_ids: pd.Series, fraction: float, seed: int) -> pd.Series:
    """``test`` for a deterministic pseudo-random ``fraction`` of queries (exact count), else ``train``."""
    if not 0 < fraction < 1:
        raise DataError(
            f"--split-test must be in (0, 1), got {fraction}", source="arguments", field="split_test"
        )
    n_test = int(round(fraction * len(query_ids)))
    order = sorted(range(len(query_ids)), key=lambda i: stable_int("split", seed, query_ids.iloc[i]))
    split = pd.Series(["train"] * len(query_ids), index=query_ids.index)
    split.iloc[order[:n_test]] = "test"
    return split


def _read(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"not valid JSON: {e.msg}", source=str(path), row=i) from None
                if not isinstance(obj, dict):
                    raise DataError("each line must be a JSON object", source=str(path), row=i)
                rows.append(obj)
        return pd.DataFrame(rows)
    raise DataError("unknown queries format (use .jsonl, .csv or .parquet)", source=str(path))


def load_queries(path: str | os.PathLike, *, split_test: float | None = None, seed: int = 0) -> pd.DataFrame:
    """Validated queries with columns :data:`QUERY_COLUMNS` (errors name the file, line and field)."""
    p = Path(path)
    if not p.is_file():
        raise DataError("queries file not found", source=str(p))
    df = _read(p)
    off = 1 if p.suffix.lower() == ".csv" else 0  # CSV: line 1 is the header
    if len(df) == 0:
        raise DataError("no queries (empty file)", source=str(p))
    if "query_id" not in df.columns and "id" in df.columns:
        df = df.rename(columns={"id": "query_id"})
    for col in ("query_id", "question", "answer"):
        if col not in df.columns:
            raise DataError("missing required column", source=str(p), field=col)
        vals = df[col]
        bad = vals.isna() | (vals.astype(str).str.strip() == "")
        if bad.any():
            raise DataError(
                "empty value", source=str(p), row=int(bad.to_numpy().argmax()) + 1 + off, field=col
            )
    out = pd.DataFrame(
        {
            "query_id": df["query_id"].astype(str),
            "question": df["question"].astype(str),
            "answer": df["answer"].astype(str),
        }
    )
    out["context"] = (
        df["context"].where(df["context"].notna() & (df["context"].astype(str) != ""), None)
        if "context" in df.columns
        else None
    )
    dup = out["query_id"].duplicated(keep="first")
    if dup.any():
        i = int(dup.to_numpy().argmax())
        raise DataError(
            f"duplicate query_id '{out['query_id'].iloc[i]}'",
            source=str(p),
            row=i + 1 + off,
            field="query_id",
        )
    has_split = "split" in df.columns and (df["split"].astype(str).str.strip() != "").all()
    if has_split:
        split = df["split"].astype(str).str.strip()
        bad = ~split.isin(["train", "test"])
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise DataError(
                f"split must be train or test (got {split.iloc[i]!r})",
                source=str(p),
                row=i + 1 + off,
                field="split",
            )
        if split_test is not None:
            raise DataError(
                "the file has a split column; drop --split-test or the column", source=str(p), field="split"
            )
        out["split"] = split.to_numpy()
    elif split_test is not None:
        out["split"] = assign_splits(out["query_id"], split_test, seed).to_numpy()
    else:
        out["split"] = "train"
    return out[list(QUERY_COLUMNS)].reset_index(drop=True)
