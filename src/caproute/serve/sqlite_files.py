"""The SQLite files the proxy writes (the feedback store, the request log): one path check, so a
bad path is a named :class:`ConfigError` before the server prints its banner, never a traceback
from the server's startup, and another application's database is never written into."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from caproute.errors import ConfigError

SQLITE_MAGIC = b"SQLite format 3\x00"


def _header_problem(p: Path, what: str) -> str | None:
    """Why the non-empty file ``p`` is not an SQLite database (unreadable, other bytes), or None."""
    try:
        with open(p, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        return f"cannot read the {what}: {e.strerror or e}"
    return None if head == SQLITE_MAGIC else f"not an SQLite database (a {what} is one)"


def _table_names(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def check_sqlite_path(path: str | os.PathLike, *, what: str, flag: str) -> Path:
    """``path`` as a Path, or ConfigError: a directory, a parent that is a file, an unreadable file
    or an existing non-empty file that is not an SQLite database."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: the {what} is a directory; give a file path ({flag})")
    if p.parent.exists() and not p.parent.is_dir():
        raise ConfigError(f"{p}: {p.parent} is not a directory; give another path ({flag})")
    problem = _header_problem(p, what) if p.exists() and p.stat().st_size > 0 else None
    if problem is not None:
        raise ConfigError(f"{p}: {problem}; give another path ({flag})")
    return p


def check_own_tables(con: sqlite3.Connection, path: Path, *, table: str, what: str) -> None:
    """ConfigError when the database has tables but not ``table``: another application's file."""
    tables = _table_names(con)
    if tables and table not in tables:
        con.close()
        raise ConfigError(f"{path}: an SQLite database of something else (tables {sorted(tables)[:5]}), "
                          f"not a caproute {what}; give another path")


def read_query(path: str | os.PathLike, sql: str, *, table: str, what: str):
    """The rows of ``sql`` on the caproute SQLite file ``path`` (read-only; works while a server
    writes it), or a :class:`DataError` naming the file: not found, not SQLite, another
    application's database, or unreadable."""
    import pandas as pd

    from caproute.errors import DataError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} not found", source=str(p))
    problem = _header_problem(p, what)
    if problem is not None:
        raise DataError(problem, source=str(p))
    con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        tables = _table_names(con)
        if table not in tables:
            raise DataError(f"not a caproute {what} (no '{table}' table; tables {sorted(tables)[:5]})", source=str(p))
        return pd.read_sql_query(sql, con)
    except (sqlite3.Error, pd.errors.DatabaseError) as e:
        raise DataError(f"cannot read the {what}: {str(e).splitlines()[-1][-200:]}", source=str(p)) from None
    finally:
        con.close()
