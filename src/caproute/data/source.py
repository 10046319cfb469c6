"""Where observations come from: a store (``--store``) or files (``--data``: a DARS directory,
a Parquet/JSONL/CSV file, a RouterDC folder, or ``builtin`` / ``builtin:NAME`` for the sets shipped in the
package)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from caproute.data.store import ObservationStore, resolve_dataset
from caproute.errors import DataError

BUILTIN = "builtin"
BUILTIN_SETS: dict[str, str] = {"tinypool-mix": "builtin", "tinypool-numeric": "tinypool-numeric"}
"""Observation sets shipped in the package: name -> folder under ``caproute/assets`` (each with a
DATASHEET.md). ``--data builtin`` is :data:`DEFAULT_BUILTIN`; ``--data builtin:NAME`` picks another."""
DEFAULT_BUILTIN = "tinypool-mix"
PANDALM_ASSET = "pandalm"
"""Folder of the embedded PandaLM pairs (``caproute meta --data builtin``), see its DATASHEET.md."""


def _assets() -> Path:
    from importlib.resources import files

    return Path(str(files("caproute") / "assets"))


def is_builtin(data: str | os.PathLike | None) -> bool:
    """True for ``builtin`` and ``builtin:NAME``."""
    return data is not None and (str(data) == BUILTIN or str(data).startswith(BUILTIN + ":"))


def builtin_name(data: str | os.PathLike = BUILTIN) -> str:
    """The set named by ``builtin`` / ``builtin:NAME`` (a clear error for an unknown name)."""
    s = str(data)
    name = s.split(":", 1)[1].strip() if ":" in s else DEFAULT_BUILTIN
    if name not in BUILTIN_SETS:
        raise DataError(f"unknown builtin set '{name}' (available: {', '.join(sorted(BUILTIN_SETS))})",
                        source=s)
    return name


def builtin_path(data: str | os.PathLike = BUILTIN) -> Path:
    """The observations file of a set shipped inside the package (see the DATASHEET.md beside it)."""
    return _assets() / BUILTIN_SETS[builtin_name(data)] / "observations.parquet"


def builtin_pandalm_path() -> Path:
    """The embedded PandaLM pairs file (Apache-2.0, attribution in its DATASHEET.md)."""
    return _assets() / PANDALM_ASSET / "pairs.parquet"


def read_source(data: str | os.PathLike, fmt: str | None = None) -> pd.DataFrame:
    from caproute.data.formats import read_observations

    if is_builtin(data):
        return read_observations(builtin_path(data), "parquet")
    return read_observations(data, fmt)


def load_observations(*, store: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
                      dataset: str | None = None, split: str | None = None,
                      fmt: str | None = None) -> tuple[pd.DataFrame, str]:
    """Observations of one dataset (``dataset`` may be omitted when there is only one)."""
    if (store is None) == (data is None):
        raise DataError("pass exactly one of --store or --data", source="arguments")
    if store is not None:
        with ObservationStore(store, read_only=True) as s:
            name = resolve_dataset(s.datasets(), dataset, source=str(store))
            df = s.read(dataset=name, split=split)
        return df, name
    df = read_source(data, fmt)
    name = resolve_dataset(sorted(df["dataset"].unique()), dataset, source=str(data))
    df = df[df["dataset"] == name]
    if split is not None:
        df = df[df["split"] == split]
    return df.reset_index(drop=True), name
