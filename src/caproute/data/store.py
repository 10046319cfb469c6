"""The observation store: one embedded DuckDB file, keyed by ``schema.KEY_COLUMNS``.

Writes are idempotent upserts inside one transaction: a batch lands whole or not at all, and
writing the same observation twice leaves one row.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from caproute.data import schema
from caproute.data.validate import canonicalize
from caproute.errors import DataError

TABLE = "observations"
_ON_CONFLICT = ("update", "ignore", "error")


def _ddl() -> str:
    cols = ",\n  ".join(
        f"{c.name} {c.duckdb_type}{' NOT NULL' if c.required else ''}" for c in schema.COLUMNS)
    key = ", ".join(schema.KEY_COLUMNS)
    return (f"CREATE TABLE IF NOT EXISTS {TABLE} (\n  {cols},\n  PRIMARY KEY ({key}),\n"
            "  CHECK (score >= 0 AND score <= 1), CHECK (cost >= 0)\n)")


class ObservationStore:
    """An embedded DuckDB observation table. Use as a context manager or call :meth:`close`.

    >>> with ObservationStore("obs.duckdb") as store:   # doctest: +SKIP
    ...     store.upsert(frame)
    """

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False):
        import duckdb

        self.path = Path(path)
        self.read_only = read_only
        where = str(self.path)
        if self.path.is_dir():
            raise DataError("is a directory, not a DuckDB store file", source=where)
        if read_only and not self.path.exists():
            raise DataError("store does not exist", source=where)
        if self.path.exists() and self.path.stat().st_size > 0 and not _is_duckdb(self.path):
            raise DataError("is not a DuckDB database (corrupt, or another kind of file)", source=where)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as e:
            raise DataError(_open_error(e), source=where) from None
        except OSError as e:
            raise DataError(f"cannot open the store: {e.strerror or e}", source=where) from None
        try:
            if not read_only:
                self._con.execute(_ddl()).fetchall()
            self._check_table()
        except duckdb.Error as e:
            self._con.close()
            raise DataError(f"not a usable observation store: {_first_line(e)}", source=where) from None
        except BaseException:
            self._con.close()
            raise

    def _check_table(self) -> None:
        cols = [r[0] for r in self._con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position", [TABLE]).fetchall()]
        if not cols:
            raise DataError(f"holds no '{TABLE}' table (not a caproute store)", source=str(self.path))
        added = [c for c in schema.ADDED_COLUMNS if c not in cols]
        if added and not self.read_only:  # migration: a store of before these optional columns
            types = {c.name: c.duckdb_type for c in schema.COLUMNS}
            for c in added:
                self._con.execute(f"ALTER TABLE {TABLE} ADD COLUMN {c} {types[c]}").fetchall()
            cols += added
        missing = [c for c in schema.COLUMN_NAMES if c not in cols and c not in schema.ADDED_COLUMNS]
        if missing:
            raise DataError(f"table '{TABLE}' lacks columns {missing} (not a caproute store)",
                            source=str(self.path))

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> ObservationStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def connection(self):
        """The DuckDB connection (for SQL-side aggregation of large stores)."""
        return self._con

    # -- writes --------------------------------------------------------------------------------
    def upsert(self, frame: pd.DataFrame, *, source: str = "<frame>", on_conflict: str = "update",
               validate: bool = True) -> int:
        """Insert or update observations; returns the number of rows written.

        ``on_conflict``: ``update`` replaces an existing key's values, ``ignore`` keeps the stored
        row (resumable collection), ``error`` refuses the whole batch.
        """
        written, _ = self._upsert(frame, source=source, on_conflict=on_conflict, validate=validate)
        return written

    def merge(self, frame: pd.DataFrame, *, source: str = "<frame>", validate: bool = True) -> tuple[int, int]:
        """:meth:`upsert` (``on_conflict="update"``) that says what it did: (new rows, rows whose key
        was already present), so an idempotent re-run can report "0 new, N already present"."""
        written, new = self._upsert(frame, source=source, on_conflict="update", validate=validate)
        return new, written - new

    def _upsert(self, frame: pd.DataFrame, *, source: str, on_conflict: str, validate: bool) -> tuple[int, int]:
        """(rows written, rows new to the store)."""
        if on_conflict not in _ON_CONFLICT:
            raise ValueError(f"on_conflict must be one of {_ON_CONFLICT}")
        if len(frame) == 0:
            return 0, 0
        df = canonicalize(frame, source=source) if validate else frame[list(schema.COLUMN_NAMES)]
        key = ", ".join(schema.KEY_COLUMNS)
        cols = ", ".join(schema.COLUMN_NAMES)
        con = self._con
        con.register("_incoming", df)
        committing = False
        try:
            con.execute("BEGIN TRANSACTION").fetchall()
            if on_conflict == "error":
                n = con.execute(
                    f"SELECT count(*) FROM {TABLE} t JOIN _incoming i USING ({key})").fetchall()[0][0]
                if n:
                    raise DataError(f"{n} observations already in the store", source=source)
                clause = ""
            elif on_conflict == "ignore":
                clause = " ON CONFLICT DO NOTHING"
            else:
                updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in schema.COLUMN_NAMES
                                    if c not in schema.KEY_COLUMNS)
                clause = f" ON CONFLICT ({key}) DO UPDATE SET {updates}"
            before = con.execute(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0]
            con.execute(f"INSERT INTO {TABLE} ({cols}) SELECT {cols} FROM _incoming{clause}").fetchall()
            after = con.execute(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0]
            committing = True
            con.execute("COMMIT").fetchall()
        except BaseException as e:
            import duckdb

            # a failed COMMIT has already ended the transaction: report the first error
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK").fetchall()
            # disk full, file-size limit, read-only file system: while writing, or when committing
            if isinstance(e, duckdb.IOException) or (committing and isinstance(e, duckdb.Error)):
                raise DataError(f"cannot write the store ({str(e).splitlines()[0]}); nothing of this batch "
                                "was written", source=str(self.path)) from None
            raise
        finally:
            con.unregister("_incoming")
        new = int(after - before)
        return (len(df) if on_conflict != "ignore" else new), new

    # -- reads ---------------------------------------------------------------------------------
    def count(self, **filters) -> int:
        where, params = _where(filters)
        return int(self._con.execute(f"SELECT count(*) FROM {TABLE}{where}", params).fetchall()[0][0])

    def datasets(self) -> list[str]:
        return [r[0] for r in self._con.execute(
            f"SELECT DISTINCT dataset FROM {TABLE} ORDER BY dataset").fetchall()]

    def models(self, dataset: str | None = None) -> list[str]:
        where, params = _where({"dataset": dataset})
        return [r[0] for r in self._con.execute(
            f"SELECT DISTINCT model FROM {TABLE}{where} ORDER BY model", params).fetchall()]

    def existing_keys(self, dataset: str | None = None) -> pd.DataFrame:
        """The key columns of every stored row (what a resumed collection skips)."""
        where, params = _where({"dataset": dataset})
        return self._con.execute(
            f"SELECT {', '.join(schema.KEY_COLUMNS)} FROM {TABLE}{where}", params).df()

    def read(self, *, dataset: str | None = None, split: str | None = None,
             models: Sequence[str] | None = None, columns: Iterable[str] | None = None) -> pd.DataFrame:
        """Observations as a canonical DataFrame, ordered by key."""
        cols = list(columns) if columns is not None else list(schema.COLUMN_NAMES)
        unknown = set(cols) - set(schema.COLUMN_NAMES)
        if unknown:
            raise ValueError(f"unknown columns {sorted(unknown)}")
        where, params = _where({"dataset": dataset, "split": split})
        if models:
            where += (" AND " if where else " WHERE ") + "model IN (SELECT unnest(?))"
            params.append(list(models))
        order = ", ".join(schema.KEY_COLUMNS)
        have = self._columns()
        sel = ", ".join(c if c in have else f"NULL::VARCHAR AS {c}" for c in cols)  # a read-only older store
        return self._con.execute(
            f"SELECT {sel} FROM {TABLE}{where} ORDER BY {order}", params).df()

    def _columns(self) -> set[str]:
        return {r[0] for r in self._con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [TABLE]).fetchall()}


def _is_duckdb(path: Path) -> bool:
    from caproute.core.atomic import is_duckdb_file

    return is_duckdb_file(path)


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _open_error(e: BaseException) -> str:
    """A one-line reason for a DuckDB connect failure (lock held by another process, corruption)."""
    text = str(e)
    if "lock" in text.lower():
        import re

        m = re.search(r"PID (\d+)", text)
        who = f" (process {m.group(1)})" if m else ""
        return (f"the store is locked by another process{who}; wait for it to finish "
                "(DuckDB allows one writer at a time)")
    return f"cannot open the store: {_first_line(e)}"


def _where(filters: dict) -> tuple[str, list]:
    parts, params = [], []
    for k, v in filters.items():
        if v is None:
            continue
        parts.append(f"{k} = ?")
        params.append(v)
    return (" WHERE " + " AND ".join(parts) if parts else "", params)


def resolve_dataset(available: Sequence[str], dataset: str | None, *, source: str) -> str:
    """``dataset`` if given and present; the only dataset when omitted; otherwise a clear error."""
    if dataset is None:
        if len(available) == 1:
            return available[0]
        if not available:
            raise DataError("holds no observations", source=source)
        raise DataError(f"holds several datasets {list(available)}: pass --dataset", source=source)
    if dataset not in available:
        raise DataError(f"has no dataset '{dataset}' (available: {list(available)})", source=source)
    return dataset
