"""The observation set shipped in the package meets the DARS collection protocol (issue 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from caproute.data.source import builtin_path, load_observations


@pytest.fixture(scope="module")
def obs() -> pd.DataFrame:
    df, _ = load_observations(data="builtin")
    return df


def test_builtin_is_real_collected_data_with_a_datasheet(obs):
    folder = builtin_path().parent
    sheet = (folder / "DATASHEET.md").read_text()
    assert "sha256" in sheet and "Licences" in sheet and "scripts/collect_builtin.sh" in sheet
    assert builtin_path().stat().st_size < 8 * 2**20  # a few MB
    rw = pd.read_parquet(folder / "rewrites.parquet")
    assert set(rw["source"]) <= {"model", "template"} and (rw["source"] == "model").any()
    assert obs["response_text"].notna().all() and obs["cost_known"].all()
    assert (obs["input_tokens"] > 0).all() and (obs["cost"] > 0).all()


def test_protocol_sizes(obs):
    models = sorted(obs["model"].unique())
    assert len(models) >= 3
    train = obs[obs["split"] == "train"]
    test = obs[obs["split"] == "test"]
    assert train["query_id"].nunique() >= 150 and test["query_id"].nunique() >= 100
    # every training (query, model) pair has the full 3 x 3 grid
    grid = train.groupby(["query_id", "model"]).agg(
        k=("prompt_variant_id", "nunique"), r=("decode_id", "nunique"), n=("score", "size")
    )
    assert len(grid) == train["query_id"].nunique() * len(models)
    assert (grid["k"] >= 3).all() and (grid["r"] >= 3).all() and (grid["n"] >= 9).all()
    # both test views for every (query, model) pair
    views = test.groupby(["query_id", "model", "observation_type"]).size().unstack(fill_value=0)
    assert len(views) == test["query_id"].nunique() * len(models)
    assert (views["prompt_variation"] >= 3).all() and (views["decoding_variation"] >= 3).all()
    assert (test.loc[test["observation_type"] == "decoding_variation", "prompt_variant_id"] == -1).all()
    assert not obs.duplicated(
        ["dataset", "split", "query_id", "model", "prompt_variant_id", "decode_id", "observation_type"]
    ).any()


def test_models_differ_and_vary_under_sampling(obs):
    train = obs[obs["split"] == "train"]
    acc = train.groupby("model")["score"].mean()
    assert acc.max() - acc.min() > 0.05  # accuracies differ between models
    assert ((acc > 0) & (acc < 1)).all()
    # outcomes vary across the 9 observations of a pair for a real share of pairs
    spread = train.groupby(["query_id", "model"])["score"].agg(lambda s: s.max() - s.min())
    assert np.mean(spread > 0) > 0.1
