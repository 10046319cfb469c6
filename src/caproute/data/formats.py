"""Readers and writers: the DARS directory layout (both directions), Parquet, JSONL and CSV.

Every reader returns a canonical, validated frame (see :mod:`caproute.data.validate`) and names
the file and line of any bad row. Writers are atomic: they write a temporary sibling and rename,
so a failure never leaves half a result behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from caproute.data import schema
from caproute.data.atomic import atomic_file
from caproute.data.validate import canonicalize
from caproute.errors import DataError

FORMATS = ("dars", "parquet", "jsonl", "csv", "routerdc", "routerbench")
DARS_FILES = {"train": "train_scored_generations.jsonl", "test": "test_scored_generations.jsonl"}


# --------------------------------------------------------------------------------------------
# format detection
def detect_format(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.exists():
        raise DataError("no such file or directory", source=str(p))
    if p.is_dir():
        if any((sub / f).exists() for sub in p.iterdir() if sub.is_dir() for f in DARS_FILES.values()):
            return "dars"
        if any((p / f).exists() for f in DARS_FILES.values()):
            return "dars"
        if (p / "scores_long.parquet").exists():
            return "routerdc"
        raise DataError("directory is not a DARS layout (<dataset>/{train,test}_scored_generations.jsonl)",
                        source=str(p))
    name = p.name.lower()
    if name == "scores_long.parquet":
        return "routerdc"
    if name.startswith("routerbench") and name.endswith(".parquet"):
        return "routerbench"
    for suffix, fmt in ((".parquet", "parquet"), (".jsonl", "jsonl"), (".jsonl.gz", "jsonl"),
                        (".csv", "csv")):
        if name.endswith(suffix):
            return fmt
    raise DataError(f"cannot tell the format from the name; pass --format ({', '.join(FORMATS)})",
                    source=str(p))


# --------------------------------------------------------------------------------------------
# readers
def _read_jsonl_records(path: Path) -> tuple[list[dict], np.ndarray]:
    records, lines = [], []
    opener = open
    if path.name.endswith(".gz"):
        import gzip

        opener = gzip.open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON ({e.msg} at column {e.colno})", source=str(path),
                                row=lineno) from None
            if not isinstance(rec, dict):
                raise DataError("a line must hold one JSON object", source=str(path), row=lineno)
            records.append(rec)
            lines.append(lineno)
    return records, np.asarray(lines, dtype=np.int64)


def read_jsonl(path: str | os.PathLike, *, defaults: dict | None = None) -> pd.DataFrame:
    p = Path(path)
    records, lines = _read_jsonl_records(p)
    if not records:
        raise DataError("no observations (empty file)", source=str(p))
    return canonicalize(pd.DataFrame.from_records(records), source=str(p), row_numbers=lines,
                        defaults=defaults)


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    p = Path(path)
    try:
        df = pd.read_csv(p, keep_default_na=True, dtype={"query_id": str, "model": str})
    except pd.errors.EmptyDataError:
        raise DataError("no observations (empty file)", source=str(p)) from None
    except pd.errors.ParserError as e:
        raise DataError(f"malformed CSV: {e}", source=str(p)) from None
    # line 1 is the header
    return canonicalize(df, source=str(p), row_numbers=np.arange(2, len(df) + 2))


def read_parquet(path: str | os.PathLike) -> pd.DataFrame:
    p = Path(path)
    try:
        df = pd.read_parquet(p)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"cannot read Parquet: {e}", source=str(p)) from None
    return canonicalize(df, source=f"{p} (row numbers are 1-based)")


def read_dars_dir(root: str | os.PathLike) -> pd.DataFrame:
    """Read ``<root>/<dataset>/{train,test}_scored_generations.jsonl`` (or a single dataset folder)."""
    root = Path(root)
    folders = [root] if any((root / f).exists() for f in DARS_FILES.values()) else sorted(
        p for p in root.iterdir() if p.is_dir())
    frames = []
    for folder in folders:
        for split, fname in DARS_FILES.items():
            f = folder / fname
            if f.exists():
                frames.append(read_jsonl(f, defaults={"dataset": folder.name, "split": split}))
    if not frames:
        raise DataError("no <dataset>/{train,test}_scored_generations.jsonl files", source=str(root))
    return pd.concat(frames, ignore_index=True)


def read_observations(path: str | os.PathLike, fmt: str | None = None) -> pd.DataFrame:
    """Read any supported source into a canonical frame (format detected when ``fmt`` is None)."""
    fmt = fmt or detect_format(path)
    readers: dict[str, Callable[[Path], pd.DataFrame]] = {
        "dars": read_dars_dir, "parquet": read_parquet, "jsonl": read_jsonl, "csv": read_csv,
    }
    if fmt in readers:
        return readers[fmt](Path(path))
    from caproute.data.adapters import ADAPTERS

    if fmt in ADAPTERS:
        return ADAPTERS[fmt](Path(path))
    raise DataError(f"unknown format '{fmt}' (choose from {', '.join(FORMATS)})", source=str(path))


# --------------------------------------------------------------------------------------------
# writers (atomic)
def _atomic_target(out: Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    return tmp


def _to_dars_records(df: pd.DataFrame) -> list[dict]:
    rec = pd.DataFrame({
        "dataset": df["dataset"], "split": df["split"], "query_id": df["query_id"],
        "model": df["model"], "score": df["score"], "cost": df["cost"],
        "prompt_variant_id": df["prompt_variant_id"], "decode_id": df["decode_id"],
        "observation_type": df["observation_type"], "original_question": df["question"],
        "input_question": df["rewrite_text"].where(df["rewrite_text"].notna(), df["question"]),
        "context": df["context"], "output_text": df["response_text"],
        "prompt_tokens": df["input_tokens"], "completion_tokens": df["output_tokens"],
        "latency_s": df["latency_s"], "cost_known": df["cost_known"],
    })
    records = rec.to_dict(orient="records")
    return [{k: _jsonable(v) for k, v in r.items() if not _isnull(v)} for r in records]


def _isnull(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA


def _jsonable(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _write_jsonl(records: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_observations(df: pd.DataFrame, out: str | os.PathLike, fmt: str) -> Path:
    """Write canonical observations to ``out`` in ``fmt`` (dars | parquet | jsonl | csv), atomically."""
    out = Path(out)
    df = df[list(schema.COLUMN_NAMES)]
    if fmt == "dars":
        tmp = _atomic_target(out)
        try:
            for (dataset, split), part in df.groupby(["dataset", "split"], sort=True):
                folder = tmp / str(dataset)
                folder.mkdir(exist_ok=True)
                _write_jsonl(_to_dars_records(part), folder / DARS_FILES[str(split)])
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out
    writers = {
        "parquet": lambda d, p: d.to_parquet(p, index=False, compression="zstd"),
        "jsonl": lambda d, p: _write_jsonl(
            [{k: _jsonable(v) for k, v in r.items() if not _isnull(v)} for r in d.to_dict("records")], p),
        "csv": lambda d, p: d.to_csv(p, index=False),
    }
    if fmt not in writers:
        raise DataError(f"cannot write format '{fmt}' (choose dars, parquet, jsonl, csv)", source=str(out))
    with atomic_file(out) as tmp:
        writers[fmt](df, tmp)
    return out
