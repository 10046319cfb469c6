"""Where observations come from: a store (``--store``) or files (``--data``: a DARS directory,
a Parquet/JSONL/CSV file, a RouterDC folder, or ``builtin`` for the set shipped in the package)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from caproute.data.store import ObservationStore, resolve_dataset
from caproute.errors import DataError

BUILTIN = "builtin"


def builtin_path() -> Path:
    """The observation set shipped inside the package (see its DATASHEET.md)."""
    from importlib.resources import files

    return Path(str(files("caproute") / "assets" / "builtin" / "observations.parquet"))


def read_source(data: str | os.PathLike, fmt: str | None = None) -> pd.DataFrame:
    from caproute.data.formats import read_observations

    if str(data) == BUILTIN:
        return read_observations(builtin_path(), "parquet")
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
