"""Readers and writers: the DARS directory layout (both directions), Parquet, JSONL and CSV.

Every reader returns a canonical, validated frame (see :mod:`caproute.data.validate`) and names
the file and line of any bad row. Writers are atomic: they write a temporary sibling and rename,
so a failure never leaves half a result behind.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from caproute.data import schema
from caproute.data.atomic import atomic_file
from caproute.data.validate import JSONConstant, canonicalize, collapse_duplicates
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
def _open_binary(path: Path):
    if path.is_dir():
        raise DataError("is a directory, not a file", source=str(path))
    try:
        if path.name.endswith(".gz"):
            import gzip

            return gzip.open(path, "rb")
        return open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot open: {e.strerror or e}", source=str(path)) from None


def _field_with(rec: object, needle: str) -> str | None:
    if isinstance(rec, dict):
        for k, v in rec.items():
            if isinstance(v, str) and needle in v:
                return str(k)
    return None


class DuplicateKey(ValueError):
    """One JSON object names the same key twice (json keeps the last silently)."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_object(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(k)
        out[k] = v
    return out


# NaN / Infinity are named by the field check; a key given twice is an error, never "last one wins"
_JSON = json.JSONDecoder(parse_constant=JSONConstant, object_pairs_hook=_unique_object)


def _read_jsonl_records(path: Path) -> tuple[list[dict], np.ndarray]:
    """JSON objects of a JSONL file with their line numbers; bad bytes, bad JSON, NaN/Infinity
    and lone surrogates are named by file, line and (where it can be told) field."""
    records, lines = [], []
    with _open_binary(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                fixed = raw.decode("utf-8", errors="replace")
                try:
                    field = _field_with(json.loads(fixed), "\ufffd")
                except ValueError:
                    field = None
                raise DataError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})",
                                source=str(path), row=lineno, field=field) from None
            if not line.strip():
                continue
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            try:
                rec = _JSON.decode(line)
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON ({e.msg} at column {e.colno})", source=str(path),
                                row=lineno) from None
            except DuplicateKey as e:
                raise DataError("the same key appears twice in one JSON object", source=str(path), row=lineno,
                                field=e.key) from None
            except RecursionError:
                raise DataError("invalid JSON (nested too deeply)", source=str(path), row=lineno) from None
            if not isinstance(rec, dict):
                raise DataError("a line must hold one JSON object", source=str(path), row=lineno)
            if "\\u" in line:
                # escapes can encode lone surrogates, which no store or file format can hold
                for k, v in rec.items():
                    if isinstance(v, str) and not v.isascii():
                        try:
                            v.encode("utf-8")
                        except UnicodeEncodeError:
                            raise DataError("invalid text (a lone surrogate: not encodable as UTF-8)",
                                            source=str(path), row=lineno, field=str(k)) from None
            records.append(rec)
            lines.append(lineno)
    return records, np.asarray(lines, dtype=np.int64)


def read_jsonl(path: str | os.PathLike, *, defaults: dict | None = None, dedupe: bool = True) -> pd.DataFrame:
    p = Path(path)
    records, lines = _read_jsonl_records(p)
    if not records:
        raise DataError("no observations (empty file)", source=str(p))
    try:
        frame = pd.DataFrame.from_records(records)
    except UnicodeEncodeError:   # a surrogate in a nested value; the check above names top-level ones
        raise DataError("invalid text (a lone surrogate)", source=str(p)) from None
    return canonicalize(frame, source=str(p), row_numbers=lines, defaults=defaults, dedupe=dedupe)


def _check_csv_encoding(path: Path) -> None:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        start = data.rfind(b"\n", 0, e.start) + 1
        end = data.find(b"\n", e.start)
        line = data[start:end if end >= 0 else len(data)].decode("utf-8", errors="replace")
        header = data[:data.find(b"\n")].decode("utf-8", errors="replace")
        field = None
        try:
            import csv

            names = next(csv.reader([header]))
            cells = next(csv.reader([line]))
            field = next((names[i] for i, c in enumerate(cells) if "\ufffd" in c and i < len(names)), None)
        except (StopIteration, csv.Error):
            pass
        raise DataError(f"not valid UTF-8 (byte 0x{data[e.start]:02x})", source=str(path), row=lineno,
                        field=field) from None


def read_csv_frame(path: str | os.PathLike, *, what: str = "observations") -> tuple[pd.DataFrame, np.ndarray]:
    """The one CSV reader: cells as text (only an empty cell is missing: "NA", "null" or "None" are
    kept, a model or id may be called that; numbers are parsed by the validation layer) and each
    row's line number. Bad bytes, a column named twice in the header and malformed CSV are named."""
    import csv

    p = Path(path)
    if p.is_dir():
        raise DataError("is a directory, not a CSV file", source=str(p))
    if _looks_like_parquet(p):
        raise DataError("is a Parquet file, not CSV (use --format parquet)", source=str(p))
    _check_csv_encoding(p)
    with open(p, newline="", encoding="utf-8-sig") as fh:
        try:
            header = next(csv.reader(fh), [])
        except csv.Error as e:
            raise DataError(f"malformed CSV header: {e}", source=str(p), row=1) from None
    seen: set[str] = set()
    for name in header:
        if name in seen:
            # pandas would rename the second one "name.1" and the data would go in silently
            raise DataError("the same column appears twice in the header", source=str(p), row=1, field=name)
        seen.add(name)
    try:
        df = pd.read_csv(p, keep_default_na=False, na_values=[""], dtype=str)
    except pd.errors.EmptyDataError:
        raise DataError(f"no {what} (empty file)", source=str(p)) from None
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(f"malformed CSV: {e}", source=str(p)) from None
    return df, np.arange(2, len(df) + 2)  # line 1 is the header


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    df, lines = read_csv_frame(path)
    return canonicalize(df, source=str(path), row_numbers=lines)


def _looks_like_parquet(p: Path) -> bool:
    try:
        with open(p, "rb") as fh:
            return fh.read(4) == b"PAR1"
    except OSError:
        return False


def read_parquet_frame(path: str | os.PathLike) -> pd.DataFrame:
    """A Parquet file as it is (no schema applied); a directory, a non-Parquet or a corrupt file is
    a named error."""
    p = Path(path)
    if p.is_dir():
        raise DataError("is a directory, not a Parquet file", source=str(p))
    if p.exists() and not _looks_like_parquet(p):
        raise DataError("is not a Parquet file (no PAR1 header); pass the right --format", source=str(p))
    try:
        return pd.read_parquet(p)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"cannot read Parquet: {e}", source=str(p)) from None


def read_parquet(path: str | os.PathLike) -> pd.DataFrame:
    p = Path(path)
    return canonicalize(read_parquet_frame(p), source=f"{p} (row numbers are 1-based)")


#: the raw readers of the validation layer, for files with another schema (queries, traffic samples)
read_jsonl_records = _read_jsonl_records


def read_dars_dir(root: str | os.PathLike) -> pd.DataFrame:
    """Read ``<root>/<dataset>/{train,test}_scored_generations.jsonl`` (or a single dataset folder).

    A key that appears in several files must carry the same values everywhere (then it is kept
    once); different values are a :class:`DataError` naming both files and lines.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("is not a directory (a DARS export is <root>/<dataset>/*.jsonl)", source=str(root))
    folders = [root] if any((root / f).exists() for f in DARS_FILES.values()) else sorted(
        p for p in root.iterdir() if p.is_dir())
    frames, sources, rows = [], [], []
    for folder in folders:
        for split, fname in DARS_FILES.items():
            f = folder / fname
            if f.exists():
                records, lines = _read_jsonl_records(f)
                if not records:
                    continue
                frame = canonicalize(pd.DataFrame.from_records(records), source=str(f), row_numbers=lines,
                                     defaults={"dataset": folder.name, "split": split}, dedupe=False)
                frames.append(frame)
                sources.append(np.full(len(frame), str(f), dtype=object))
                rows.append(lines)
    if not frames:
        raise DataError("no <dataset>/{train,test}_scored_generations.jsonl files with rows", source=str(root))
    df = pd.concat(frames, ignore_index=True)
    return collapse_duplicates(df, sources=np.concatenate(sources), rows=np.concatenate(rows))


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
DARS_KIND = "dars-export"
"""Marker kind of a DARS directory written by caproute (see :func:`caproute.data.atomic.atomic_dir`)."""


def _dars_folder(dataset: str) -> str:
    """A safe folder name for a dataset (rows keep the exact name in their ``dataset`` field)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", dataset)
    return "_" + name if name in (".", "..") or name.startswith(".") else name


def _to_dars_records(df: pd.DataFrame) -> list[dict]:
    """Reference-format records. ``input_question`` is written only where a rewrite text exists,
    so the original-query rows read back with no rewrite (lossless round trip); a row with a
    rewrite but no question text keeps it in ``rewrite_text`` (a question field would take it)."""
    has_q = df["question"].notna()
    rw = df["rewrite_text"]
    rec = pd.DataFrame({
        "dataset": df["dataset"], "split": df["split"], "query_id": df["query_id"],
        "model": df["model"], "score": df["score"], "cost": df["cost"],
        "prompt_variant_id": df["prompt_variant_id"], "decode_id": df["decode_id"],
        "observation_type": df["observation_type"], "original_question": df["question"],
        "input_question": rw.where(has_q, None), "rewrite_text": rw.where(~has_q, None),
        "context": df["context"], "output_text": df["response_text"],
        "prompt_tokens": df["input_tokens"], "completion_tokens": df["output_tokens"],
        "latency_s": df["latency_s"], "cost_known": df["cost_known"], "score_source": df["score_source"],
    })
    records = rec.to_dict(orient="records")
    return [{k: _jsonable(v) for k, v in r.items() if not _isnull(v)} for r in records]


def _isnull(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float | np.floating) and np.isnan(v))


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
            fh.write(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n")


def check_export_target(out: str | os.PathLike, fmt: str, *, store: str | os.PathLike | None = None) -> Path:
    """Refuse targets an export must never replace: the store itself, the current directory,
    a directory holding the store, or a non-empty directory caproute did not write."""
    from caproute.data.atomic import check_output_dir, check_output_file

    out = Path(out)
    if store is not None:
        st = Path(store).resolve()
        if out.resolve() == st or (out.exists() and st.exists() and os.path.samefile(out, st)):
            raise DataError("is the store being exported; refusing to overwrite it", source=str(out))
        if out.is_dir() and st.is_relative_to(out.resolve()):
            raise DataError("holds the store being exported; refusing to replace it", source=str(out))
    if fmt == "dars":
        return check_output_dir(out, DARS_KIND)
    return check_output_file(out)


def write_observations(df: pd.DataFrame, out: str | os.PathLike, fmt: str) -> Path:
    """Write canonical observations to ``out`` in ``fmt`` (dars | parquet | jsonl | csv), atomically.

    A DARS export replaces ``out`` only if it is empty or an earlier DARS export (see
    :func:`caproute.data.atomic.atomic_dir`); a file format never replaces a directory or a store.
    """
    from caproute.data.atomic import atomic_dir, table_format

    out = Path(out)
    df = df[list(schema.COLUMN_NAMES)]
    if fmt == "dars":
        check_export_target(out, fmt)
        folders = df["dataset"].astype(str).map(_dars_folder)
        with atomic_dir(out, DARS_KIND) as tmp:
            for (folder, split), part in df.groupby([folders, df["split"]], sort=True):
                (tmp / str(folder)).mkdir(exist_ok=True)
                _write_jsonl(_to_dars_records(part), tmp / str(folder) / DARS_FILES[str(split)])
        return out
    writers = {
        "parquet": lambda d, p: d.to_parquet(p, index=False, compression="zstd"),
        "jsonl": lambda d, p: _write_jsonl(
            [{k: _jsonable(v) for k, v in r.items() if not _isnull(v)} for r in d.to_dict("records")], p),
        "csv": lambda d, p: d.to_csv(p, index=False),
    }
    if fmt not in writers:
        raise DataError(f"cannot write format '{fmt}' (choose dars, parquet, jsonl, csv)", source=str(out))
    table_format(out, fmt, option="OUT")
    check_export_target(out, fmt)
    with atomic_file(out) as tmp:
        writers[fmt](df, tmp)
    return out
