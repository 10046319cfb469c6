"""RouterBench 0-shot rows (one scored, costed response per pair; USD ``total_cost``).

``prompt`` is a stringified Python list in the release; its first element is the query text.
Single-shot data: each pair becomes one decode-view observation (prompt_variant_id -1, decode 0).

The release has rows with no score (14 arc-challenge prompts, no score for any model). They are
dropped with a warning that gives the count, never silently; any other missing value is an error.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pandas as pd

from caproute.data.adapters.common import read_parquet_table
from caproute.data.validate import canonicalize
from caproute.errors import DataError, DataWarning


def _first_prompt(text: str) -> str:
    try:
        v = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    if isinstance(v, list | tuple) and v:
        return str(v[0])
    return str(v)


def read_routerbench(path: Path) -> pd.DataFrame:
    path = Path(path)
    f = path / "routerbench0shot_subset_long.parquet" if path.is_dir() else path
    if not f.exists():
        raise DataError("RouterBench parquet not found", source=str(f))
    df = read_parquet_table(f, "RouterBench")
    need = {"sample_id", "eval_name", "split", "prompt", "model", "score", "total_cost"}
    missing = need - set(df.columns)
    if missing:
        raise DataError(f"missing columns {sorted(missing)}", source=str(f))
    unscored = df["score"].isna()
    if unscored.any():
        warnings.warn(f"{f}: dropped {int(unscored.sum())} rows with no score "
                      f"({df.loc[unscored, 'sample_id'].nunique()} prompts; a gap in the release)",
                      DataWarning, stacklevel=2)
        df = df[~unscored].reset_index(drop=True)
    out = pd.DataFrame({
        "dataset": df["eval_name"], "split": df["split"], "query_id": df["sample_id"],
        "model": df["model"], "prompt_variant_id": -1, "decode_id": 0,
        "observation_type": "decoding_variation", "score": df["score"], "cost": df["total_cost"],
        "cost_known": True, "question": df["prompt"].map(_first_prompt),
        "response_text": df.get("response"),
    })
    return canonicalize(out, source=str(f))
