"""What every adapter shares: reading the release's Parquet file or failing with a named error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from caproute.errors import DataError


def read_parquet_table(path: Path, release: str) -> pd.DataFrame:
    """The Parquet table of a third-party release (a DataError for a directory, CSV, or corrupt file)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"is a directory, not the {release} Parquet file", source=str(path))
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise DataError(f"cannot open: {e.strerror or e}", source=str(path)) from None
    if magic != b"PAR1":
        raise DataError(f"is not a Parquet file (the {release} release is Parquet); pass the right --format",
                        source=str(path))
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"cannot read Parquet: {e}", source=str(path)) from None
