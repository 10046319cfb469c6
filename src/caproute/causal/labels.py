"""Gold quality gains and preference labels per (query, model pair): the Meta-Router's data (§C.1).

One row ("item") is one query answered by two models. ``model_1`` is the *primary* model M_p and
``model_2`` the *alternative* M_a of that item, and both labels are gains oriented as
model_1 - model_2:

- ``gold``: the gold-standard gain r = psi(q) + eps (human majority, rubric grading, or the
  difference of mean scores), NaN when the item has no gold label.
- ``pref``: the preference-based gain y = eta(q) + eps' of a cheap, biased mechanism (an LLM judge,
  a crowd, a simulated judge), NaN when that mechanism gave no usable verdict.

Verdict coding (PandaLM's, and the coding judge files use): 1 = response 1 (model_1) better,
2 = response 2 (model_2) better, 0 = tie; mapped to gains +1, -1, 0 (:data:`VERDICT_TO_GAIN`).
Missing labels stay NaN and are counted in :meth:`PairwiseGains.counts`; nothing is dropped
here. The experiment decides per split which rows can serve as gold, preference or test rows
and reports how many it could not use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from caproute.errors import DataError

ITEM_COLUMNS: tuple[str, ...] = ("item_id", "query_id", "text", "model_1", "model_2", "gold", "pref")
"""Columns of :attr:`PairwiseGains.items` (and of a gains file written by :func:`write_gains`)."""

VERDICT_TO_GAIN: dict[int, float] = {1: 1.0, 2: -1.0, 0: 0.0}
"""Pairwise verdict code -> gain of model_1 over model_2."""


def verdict_to_gain(codes, *, source: str, field: str) -> np.ndarray:
    """Map verdict codes {1, 2, 0} (None/NaN = missing) to gains {+1, -1, 0} (NaN = missing).

    Any other value raises a :class:`DataError` naming ``source``, the 1-based row and ``field``.
    """
    s = pd.Series(codes, dtype="object").reset_index(drop=True)
    out = np.full(len(s), np.nan)
    for i, v in enumerate(s):
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            continue
        try:
            code = int(v)
        except (TypeError, ValueError):
            code = None
        if code is None or code != v or code not in VERDICT_TO_GAIN:
            raise DataError(f"verdict {v!r} is not one of 1 (response 1 better), 2 (response 2 better), "
                            f"0 (tie) or null", source=source, row=i + 1, field=field)
        out[i] = VERDICT_TO_GAIN[code]
    return out


@dataclass
class PairwiseGains:
    """Items with gold and preference gains (see the module docstring for the orientation).

    ``items`` has the columns :data:`ITEM_COLUMNS`; ``gold_source`` / ``pref_source`` name the
    label mechanisms (e.g. ``human_majority``, ``gpt35``); ``meta`` keeps reader notes.
    """

    items: pd.DataFrame
    gold_source: str
    pref_source: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        missing = [c for c in ITEM_COLUMNS if c not in self.items.columns]
        if missing:
            raise DataError(f"missing columns {missing}", source="pairwise gains")
        items = self.items.loc[:, list(ITEM_COLUMNS)].reset_index(drop=True).copy()
        for col in ("item_id", "query_id", "text", "model_1", "model_2"):
            if items[col].isna().any():
                row = int(np.flatnonzero(items[col].isna().to_numpy())[0]) + 1
                raise DataError("is empty", source="pairwise gains", row=row, field=col)
            items[col] = items[col].astype(str)
        for col in ("gold", "pref"):
            vals = pd.to_numeric(items[col], errors="coerce").astype(float)
            bad = vals.isna() & items[col].notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
                raise DataError(f"{items[col].iloc[row - 1]!r} is not a number", source="pairwise gains",
                                row=row, field=col)
            finite = vals.dropna()
            if not np.isfinite(finite.to_numpy()).all():
                row = int(np.flatnonzero(~np.isfinite(vals.fillna(0).to_numpy()))[0]) + 1
                raise DataError("is infinite", source="pairwise gains", row=row, field=col)
            items[col] = vals.to_numpy()
        if items["item_id"].duplicated().any():
            row = int(np.flatnonzero(items["item_id"].duplicated().to_numpy())[0]) + 1
            raise DataError(f"duplicate item_id {items['item_id'].iloc[row - 1]!r}", source="pairwise gains",
                            row=row, field="item_id")
        same = items["model_1"] == items["model_2"]
        if same.any():
            row = int(np.flatnonzero(same.to_numpy())[0]) + 1
            raise DataError("model_1 equals model_2", source="pairwise gains", row=row, field="model_2")
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    @property
    def gold(self) -> np.ndarray:
        return self.items["gold"].to_numpy(float)

    @property
    def pref(self) -> np.ndarray:
        return self.items["pref"].to_numpy(float)

    @property
    def models(self) -> tuple[str, ...]:
        """All models that appear in an item, sorted."""
        return tuple(sorted(set(self.items["model_1"]) | set(self.items["model_2"])))

    def counts(self) -> dict[str, int]:
        """How many items have / lack each label (nulls are counted, never silently dropped)."""
        g, p = np.isfinite(self.gold), np.isfinite(self.pref)
        return {"items": len(self), "queries": int(self.items["query_id"].nunique()),
                "gold_missing": int((~g).sum()), "pref_missing": int((~p).sum()),
                "both_missing": int((~g & ~p).sum())}

    def pair_indicator(self, models: tuple[str, ...] | None = None) -> np.ndarray:
        """Signed model indicator (n_items, n_models): +1 for model_1, -1 for model_2, else 0.

        Appended to the query embedding when items of several model pairs are pooled, so that a
        gain model can tell the pairs apart; it is antisymmetric like the gain itself.
        """
        models = self.models if models is None else tuple(models)
        index = {m: i for i, m in enumerate(models)}
        out = np.zeros((len(self), len(models)))
        rows = np.arange(len(self))
        try:
            out[rows, self.items["model_1"].map(index).to_numpy(int)] = 1.0
            out[rows, self.items["model_2"].map(index).to_numpy(int)] = -1.0
        except (ValueError, TypeError):
            unknown = sorted((set(self.items["model_1"]) | set(self.items["model_2"])) - set(models))
            raise DataError(f"models {unknown} are not in {list(models)}", source="pairwise gains") from None
        return out

    def with_pref(self, pref: np.ndarray, source: str) -> PairwiseGains:
        """The same items with another preference mechanism's labels."""
        items = self.items.copy()
        items["pref"] = np.asarray(pref, dtype=float)
        return PairwiseGains(items, self.gold_source, source, dict(self.meta))


def write_gains(gains: PairwiseGains, out: str | os.PathLike) -> Path:
    """Write the items as Parquet (atomically); the sources go into the file's metadata columns."""
    from caproute.core.atomic import write_parquet

    df = gains.items.copy()
    df["gold_source"] = gains.gold_source
    df["pref_source"] = gains.pref_source
    write_parquet(df, out)
    return Path(out)


def read_gains(path: str | os.PathLike) -> PairwiseGains:
    """Read a gains file written by :func:`write_gains` (Parquet or CSV with :data:`ITEM_COLUMNS`)."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", source=str(path))
    try:
        df = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - any reader failure is a data error for the user
        raise DataError(f"cannot read ({type(e).__name__}: {e})", source=str(path)) from None
    missing = [c for c in ITEM_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"missing columns {missing} (a gains file needs {list(ITEM_COLUMNS)})",
                        source=str(path), field=missing[0])
    gold_source = str(df["gold_source"].iloc[0]) if "gold_source" in df and len(df) else "gold"
    pref_source = str(df["pref_source"].iloc[0]) if "pref_source" in df and len(df) else "pref"
    try:
        return PairwiseGains(df, gold_source, pref_source, {"path": str(path)})
    except DataError as e:
        # CSV: data row 1 is line 2 (after the header); Parquet rows are 1-based rows.
        row = None if e.row is None else e.row + (1 if path.suffix.lower() == ".csv" else 0)
        raise DataError(e.reason, source=str(path), row=row, field=e.field) from None
