"""Out-of-core supervision equals the in-memory table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from caproute.errors import DataError
from caproute.supervise.api import supervision_table
from caproute.supervise.outofcore import supervise_out_of_core


def test_out_of_core_matches_in_memory(tmp_path):
    rng = np.random.default_rng(5)
    n = 5000
    df = pd.DataFrame({
        "dataset": "d", "split": rng.choice(["train", "test"], n, p=[0.8, 0.2]),
        "query_id": rng.integers(0, 60, n).astype(str), "model": rng.choice(list("ABCD"), n),
        "prompt_variant_id": rng.integers(0, 3, n), "decode_id": np.arange(n),
        "observation_type": "prompt_variation", "score": rng.integers(0, 2, n).astype(float),
        "cost": rng.random(n)})
    (tmp_path / "parts").mkdir()
    df.iloc[:2500].to_parquet(tmp_path / "parts" / "a.parquet")
    df.iloc[2500:].to_parquet(tmp_path / "parts" / "b.parquet")
    info = supervise_out_of_core(tmp_path / "parts", tmp_path / "s.parquet", partitions=3, progress=False)
    got = pd.read_parquet(tmp_path / "s.parquet").sort_values(["query_id", "model"]).reset_index(drop=True)
    ref = supervision_table(df).sort_values(["query_id", "model"]).reset_index(drop=True)
    assert info["pairs"] == len(ref) == len(got)
    for col in ("n", "mu_q", "mu_c", "sigma_q", "utility", "var_input", "var_output"):
        np.testing.assert_allclose(got[col].to_numpy(float), ref[col].to_numpy(float), atol=1e-9, err_msg=col)


def test_out_of_core_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        supervise_out_of_core(tmp_path / "missing.parquet", tmp_path / "o.parquet", progress=False)
    assert not (tmp_path / "o.parquet").exists()
