"""Atomic writes that only ever replace what they created.

- :func:`atomic_file`: write a temporary sibling, then rename over the target (never half a file).
  The target may not be a directory or a DuckDB database (a store is never overwritten by an export
  or a report).
- :func:`atomic_dir`: build a directory in a temporary sibling and swap it into place. An existing
  directory is replaced only when it is empty or was written by the same kind of caproute writer
  (its marker file lists every file in it); any other directory, the current directory and any
  directory holding a store are refused.
- :func:`commit_files`: several files replaced in a fixed order, each written whole first.
- :func:`staged_dir`: a folder built aside and swapped in (the old one removed only afterwards).
- This is the only module that renames files into place (tests/test_architecture.py checks it).
- Files and directories get the user's umask (``mkstemp``/``mkdtemp`` create 0600/0700).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from caproute.core.procs import pid_exists
from caproute.errors import DataError

DUCKDB_MAGIC = b"DUCK"   # bytes 8..12 of every DuckDB database file
MARKER_FILE = ".caproute-export.json"
"""Manifest a directory writer leaves in its output: ``{"kind": ..., "files": [...]}``."""


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (else set and restore)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, *, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def is_duckdb_file(path: str | os.PathLike) -> bool:
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            return fh.read(12)[8:12] == DUCKDB_MAGIC
    except OSError:
        return False


def check_output_file(out: str | os.PathLike, *, option: str | None = None) -> Path:
    """Refuse an output path that is a directory or a DuckDB store (named error, nothing written)."""
    out = Path(out)
    where = f"{option} {out}" if option else str(out)
    if out.is_dir():
        raise DataError("is a directory; give a file path", source=where)
    if out.exists() and is_duckdb_file(out):
        raise DataError("is a DuckDB database (a store); refusing to overwrite it", source=where)
    return out


def make_parent(out: Path) -> None:
    """Create the folder ``out`` goes in, or a named error (e.g. a file is in the way)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create its folder ({e.strerror or e})", source=str(out)) from None


_STAGE = ".tmp-"  # staging names: .{name}.{pid}.tmp-XXXX (files) and .{name}.{pid}.old (dirs set aside)


def clean_stale_staging(out: Path) -> list[Path]:
    """Remove what an earlier writer of ``out`` left when it was killed (kill -9, power loss): the
    siblings ``.{out.name}.{pid}.tmp-*`` and ``.{out.name}.{pid}.old`` whose process is gone.
    Another live writer's staging (its pid runs) is left alone. Returns what was removed."""
    removed = []
    prefix = f".{out.name}."
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        rest = p.name[len(prefix):] if p.name.startswith(prefix) else ""
        pid, _, kind = rest.partition(".")
        if not pid.isdigit() or not (kind.startswith(_STAGE[1:]) or kind == "old"):
            continue
        if int(pid) == os.getpid() or pid_exists(int(pid)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _write_failed(e: OSError, staging: Path) -> bool:
    """True for an OSError of the writing itself (no file named, or the staging one): disk full,
    file-size limit, read-only file system, I/O error; the caller names it for the output."""
    return e.filename is None or str(e.filename).startswith(str(staging))


@contextmanager
def atomic_file(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``out``, on error it is removed. A failed
    write (disk full, file-size limit) is a :class:`DataError` naming ``out``; staging files of
    an earlier writer that was killed are removed first."""
    out = check_output_file(out)
    make_parent(out)
    clean_stale_staging(out)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.{os.getpid()}{_STAGE}", dir=out.parent)
    except OSError as e:
        raise DataError(f"cannot write here ({e.strerror or e})", source=str(out)) from None
    os.close(fd)
    try:
        yield Path(tmp)
        apply_umask(tmp)
        os.replace(tmp, out)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if _write_failed(e, Path(tmp)):
            raise DataError(f"cannot write ({e.strerror or e}); nothing was written", source=str(out)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def commit_files(folder: str | os.PathLike, pending: list[tuple[str, str, bytes]]) -> None:
    """A crash-safe checkpoint of several files in ``folder``: each ``(next_name, final_name, data)``
    is first written whole to ``next_name`` (atomically), then every ``next_name`` is renamed over
    its ``final_name`` in the order given. A reader that finds a complete ``next`` file can roll
    forward over an interrupted commit (see :mod:`caproute.bandits.policy`)."""
    folder = Path(folder)
    for next_name, _, data in pending:
        with atomic_file(folder / next_name) as tmp:
            tmp.write_bytes(data)
    for next_name, final_name, _ in pending:
        os.replace(folder / next_name, folder / final_name)


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def check_output_dir(out: str | os.PathLike, kind: str, *, option: str | None = None) -> Path:
    """Refuse to replace anything but an empty directory or an earlier output of ``kind``."""
    out = Path(out)
    where = f"{option} {out}" if option else str(out)
    if not out.exists():
        return out
    if not out.is_dir():
        raise DataError("exists and is not a directory; choose a new path", source=where)
    if out.resolve() == Path.cwd().resolve():
        raise DataError("is the current directory; refusing to replace it", source=where)
    if not any(out.iterdir()):
        return out
    marker = out / MARKER_FILE
    try:
        manifest = json.loads(marker.read_text())
    except (OSError, ValueError):
        raise DataError(f"is a non-empty directory that caproute did not write (no {MARKER_FILE}); "
                        "choose a new path or remove it yourself", source=where) from None
    if not isinstance(manifest, dict) or manifest.get("kind") != kind:
        raise DataError(f"was written by another caproute command (not {kind}); choose a new path",
                        source=where)
    extra = sorted(_listing(out) - set(manifest.get("files", [])) - {MARKER_FILE})
    if extra:
        raise DataError(f"holds files caproute did not write ({', '.join(extra[:3])}"
                        f"{' ...' if len(extra) > 3 else ''}); refusing to replace it", source=where)
    return out


@contextmanager
def staged_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``out`` (files get the user's
    umask; an old ``out`` is renamed aside first and removed only after the new one is in place),
    on error it is removed and ``out`` is untouched. Callers check ownership of ``out`` first."""
    out = Path(out)
    make_parent(out)
    clean_stale_staging(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}{_STAGE}", dir=out.parent))
    except OSError as e:
        raise DataError(f"cannot write here ({e.strerror or e})", source=str(out)) from None
    try:
        yield tmp
        for p in [tmp, *tmp.rglob("*")]:
            apply_umask(p, directory=p.is_dir())
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.{os.getpid()}.old")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if _write_failed(e, tmp):
            raise DataError(f"cannot write ({e.strerror or e}); nothing was written", source=str(out)) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_dir(out: str | os.PathLike, kind: str, *, option: str | None = None) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``out`` (see :func:`check_output_dir`)
    with a marker listing its files; on error it is removed and ``out`` is untouched."""
    out = check_output_dir(out, kind, option=option)
    with staged_dir(out) as tmp:
        yield tmp
        files = sorted(_listing(tmp))
        (tmp / MARKER_FILE).write_text(json.dumps({"kind": kind, "files": files}, indent=1) + "\n")


def write_json(obj, out: str | os.PathLike) -> None:
    with atomic_file(out) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n")


def write_parquet(df, out: str | os.PathLike) -> None:
    with atomic_file(out) as tmp:
        df.to_parquet(tmp, index=False)


TABLE_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}


def table_format(out: str | os.PathLike, fmt: str | None = None, *, option: str = "--out") -> str:
    """The table format of ``out``: from its suffix, checked against ``fmt`` when both are given."""
    suffix = Path(out).suffix.lower()
    by_suffix = TABLE_SUFFIXES.get(suffix)
    if fmt is None:
        if by_suffix is None:
            raise DataError(f"cannot tell the format from the suffix '{suffix}' "
                            f"(use {', '.join(TABLE_SUFFIXES)})", source=f"{option} {out}")
        return by_suffix
    if by_suffix is not None and by_suffix != fmt:
        raise DataError(f"suffix '{suffix}' does not match --format {fmt}", source=f"{option} {out}")
    return fmt


def write_table(df, out: str | os.PathLike, fmt: str | None = None, *, option: str = "--out") -> str:
    """Write a result table as Parquet, CSV or JSONL (chosen by the suffix of ``out``), atomically."""
    fmt = table_format(out, fmt, option=option)
    check_output_file(out, option=option)
    with atomic_file(out) as tmp:
        if fmt == "parquet":
            df.to_parquet(tmp, index=False)
        elif fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
    return fmt
