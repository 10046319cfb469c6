"""The data shipped in the package (issue 13): `builtin` / `builtin:NAME` observation sets, the embedded
PandaLM pairs, every `--data builtin` path, and the demo's one-sentence summary."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

import _cli
from caproute.data.source import (
    BUILTIN_SETS,
    DEFAULT_BUILTIN,
    builtin_name,
    builtin_pandalm_path,
    builtin_path,
    is_builtin,
    load_observations,
)
from caproute.errors import DataError

run_cli = functools.partial(_cli.run_cli, timeout=600)


def test_builtin_names_resolve_and_each_set_has_a_datasheet():
    assert is_builtin("builtin") and is_builtin("builtin:tinypool-numeric") and not is_builtin("builtin.parquet")
    assert builtin_name("builtin") == DEFAULT_BUILTIN == "tinypool-mix"
    assert builtin_name("builtin:tinypool-numeric") == "tinypool-numeric"
    for name in BUILTIN_SETS:
        p = builtin_path(f"builtin:{name}")
        assert p.is_file() and (p.parent / "DATASHEET.md").is_file()
        df, ds = load_observations(data=f"builtin:{name}")
        assert ds == name and len(df) > 1000
    assert (builtin_pandalm_path().parent / "DATASHEET.md").is_file()
    with pytest.raises(DataError, match="unknown builtin set 'nope'.*tinypool-mix"):
        builtin_path("builtin:nope")


def test_unknown_builtin_set_is_a_clear_cli_error():
    res = run_cli("diagnose", "--data", "builtin:nope", check=False)
    assert res.returncode == 2 and "unknown builtin set 'nope'" in res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def test_embedded_pandalm_is_offline_and_small():
    from caproute.causal.api import load_pairwise
    from caproute.causal.pandalm import is_pandalm, resolve_pandalm_path

    p = builtin_pandalm_path()
    assert resolve_pandalm_path("builtin") == p and is_pandalm("builtin") and is_pandalm(p)
    assert p.stat().st_size < 100_000
    sheet = (p.parent / "DATASHEET.md").read_text()
    assert "Apache-2.0" in sheet and "WeOpenML/PandaLM" in sheet and "3871806e" in sheet
    gains = load_pairwise("builtin")
    assert set(gains) == {"gpt35", "pandalm7b"}
    c = gains["gpt35"].counts()
    assert c["items"] == 999 and c["queries"] == 170 and c["pref_missing"] == 25


def test_embedded_pandalm_equals_the_shared_file(pandalm_file):
    from caproute.causal.pandalm import read_pandalm

    for judge in ("gpt35", "pandalm7b"):
        a, b = read_pandalm("builtin", judge), read_pandalm(pandalm_file, judge)
        pd.testing.assert_frame_equal(a.items, b.items)


def test_supervise_streaming_builtin(tmp_path):
    out = tmp_path / "sup.parquet"
    run_cli("supervise", "--data", "builtin", "--streaming", "--out", out)
    table = pd.read_parquet(out)
    obs, _ = load_observations(data="builtin", split="train")
    assert len(table) == obs["query_id"].nunique() * obs["model"].nunique()
    # the streaming path agrees with the in-memory one
    mem = tmp_path / "mem.parquet"
    run_cli("supervise", "--data", "builtin", "--out", mem)
    m = pd.read_parquet(mem).sort_values(["query_id", "model"]).reset_index(drop=True)
    s = table.sort_values(["query_id", "model"]).reset_index(drop=True)
    np.testing.assert_allclose(s["utility"], m["utility"], atol=1e-9)


@pytest.mark.slow
def test_meta_builtin_cli_runs_offline(tmp_path):
    res = run_cli("meta", "--data", "builtin", "--judge", "gpt35", "--gold-n", "30", "--runs", "1",
                  "--methods", "gold-only,pref-only", "--json", tmp_path / "rows.json", "--report", tmp_path / "rep")
    assert "pandalm / gpt35: 999 items, 170 queries" in res.stdout.replace("\n", " ")
    assert (tmp_path / "rows.json").exists()


# -- the demo's summary --------------------------------------------------------------------------------
def _rows(dars_gain: float) -> pd.DataFrame:
    rows = []
    for view, fixed in (("rewrite", 0.40), ("decode", 0.50)):
        rows += [
            {"router": "best_fixed", "supervision": None, "view": view, "utility_mean": fixed, "utility_std": 0.0,
             "quality_mean": fixed + 0.01, "cost_mean": 0.2, "model": "m1", "n_runs": 1},
            {"router": "oracle", "supervision": None, "view": view, "utility_mean": fixed + 0.2, "utility_std": 0.0,
             "quality_mean": fixed + 0.21, "cost_mean": 0.3, "model": None, "n_runs": 1},
        ]
        for router, g in (("knn", dars_gain), ("mirt", dars_gain / 8)):
            rows += [
                {"router": router, "supervision": "single", "view": view, "utility_mean": fixed - 0.01,
                 "utility_std": 0.02, "quality_mean": fixed, "cost_mean": 0.3, "model": None, "n_runs": 20},
                {"router": router, "supervision": "dars", "view": view, "utility_mean": fixed + g,
                 "utility_std": 0.0, "quality_mean": fixed + g + 0.01, "cost_mean": 0.4, "model": None, "n_runs": 5},
            ]
        for router in ("random", "cheapest", "best_fixed_train"):
            for sup in ("single", "dars"):
                rows.append({"router": router, "supervision": sup, "view": view, "utility_mean": 0.3,
                             "utility_std": 0.0, "quality_mean": 0.3, "cost_mean": 0.1, "model": None, "n_runs": 1})
    return pd.DataFrame(rows)


def test_demo_summary_names_the_router_the_gain_and_the_cost():
    from caproute.demo import demo_summary, demo_tables

    s = demo_summary(_rows(0.08), lam=0.05, cost_range=(1e-6, 11e-6))
    assert s["router"] == "knn" and s["best_fixed_model"] == "m1" and s["gain"] == pytest.approx(0.08)
    assert s["beat_by_margin_on_every_view"] == ["knn"]
    assert s["usd_per_1k"] == pytest.approx(1000 * (1e-6 + 0.4 * 10e-6))
    text = s["sentence"]
    assert text.startswith("Routing pays here: the knn router (the best on this test view, so an optimistic pick) "
                           "trained with DARS beats always using the best single")
    assert "0.580 vs 0.500 (+0.080, +16%" in text and "1 of 2 learned routers" in text and "per 1,000 queries" in text
    learned, fixed = demo_tables(_rows(0.08), ["rewrite", "decode"])
    assert list(learned["router"]) == ["knn", "mirt"] and "Δ dec" in learned.columns
    # baselines that learn nothing: one row each, after the references, no single-shot vs DARS pair
    assert list(fixed["router"]) == ["best fixed model (test)", "oracle", "random", "cheapest", "best_fixed_train"]
    assert not any(c.startswith(("single", "DARS", "Δ")) for c in fixed.columns)
    # the headline router chosen on a validation split of the training queries (issue 24.5)
    v = demo_summary(_rows(0.08), lam=0.05, cost_range=(1e-6, 11e-6),
                     chosen={"router": "mirt", "n_validation": 20, "n_fit": 62, "utility": 0.5})
    assert v["router"] == "mirt" and v["chosen_on"] == "validation" and v["gain"] == pytest.approx(0.01)
    assert v["sentence"].startswith("Routing pays here: the mirt router (chosen on a validation split of 20 training "
                                    "queries; all 2 routers are in the table above) trained with DARS")
    bad = demo_summary(_rows(-0.05), lam=0.05, cost_range=(0.0, 1.0))
    assert bad["sentence"].startswith("Routing does not pay here") and bad["beat_by_margin_on_every_view"] == []


def test_the_demo_validation_split_is_carved_from_training_queries():
    from caproute.demo import validation_experiment
    from caproute.evaluate.protocol import load_experiment

    exp = load_experiment(data="builtin")
    v = validation_experiment(exp)
    train, fit, val = set(exp.train_query_ids), set(v.train_query_ids), set(v.test_query_ids)
    assert val and fit and val <= train and fit <= train and not (val & fit)
    assert not (val & set(exp.test_query_ids))          # the test split is never read
    assert set(v.train_obs["query_id"]) == fit and list(v.views) == ["validation"]
    assert v.views["validation"].q.shape == (len(val), len(exp.models))
    assert validation_experiment(exp).test_query_ids.tolist() == v.test_query_ids.tolist()   # seeded
