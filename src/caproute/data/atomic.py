"""Atomic writes: produce a temporary sibling, then rename over the target (never half a file)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``out``, on error it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(obj, out: str | os.PathLike) -> None:
    with atomic_file(out) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n")


def write_parquet(df, out: str | os.PathLike) -> None:
    with atomic_file(out) as tmp:
        df.to_parquet(tmp, index=False)
