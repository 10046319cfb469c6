"""Pairwise gain data model, the PandaLM reader and the builder from observations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from caproute.causal.from_observations import SimulatedJudge, gains_from_observations, read_judge_labels
from caproute.causal.labels import PairwiseGains, read_gains, verdict_to_gain, write_gains
from caproute.causal.pandalm import is_pandalm, read_pandalm
from caproute.errors import DataError


def _items(**over):
    d = {"item_id": ["a", "b", "c"], "query_id": ["q1", "q1", "q2"], "text": ["x", "x", "y"],
         "model_1": ["m1", "m2", "m1"], "model_2": ["m2", "m3", "m3"], "gold": [1.0, np.nan, -1.0],
         "pref": [1.0, 0.0, np.nan]}
    d.update(over)
    return pd.DataFrame(d)


def test_verdict_coding():
    np.testing.assert_array_equal(verdict_to_gain([1, 2, 0, None, np.nan], source="f", field="v"),
                                  [1.0, -1.0, 0.0, np.nan, np.nan])
    np.testing.assert_array_equal(verdict_to_gain(pd.Series([1, pd.NA, 2], dtype="Int64"), source="f", field="v"),
                                  [1.0, np.nan, -1.0])
    with pytest.raises(DataError, match=r"f, line 2, field 'v'.*3"):
        verdict_to_gain([1, 3], source="f", field="v")
    with pytest.raises(DataError, match="line 1"):
        verdict_to_gain([1.5], source="f", field="v")


def test_pairwise_gains_counts_and_indicator():
    g = PairwiseGains(_items(), "gold", "judge")
    assert g.counts() == {"items": 3, "queries": 2, "gold_missing": 1, "pref_missing": 1, "both_missing": 0}
    assert g.models == ("m1", "m2", "m3")
    np.testing.assert_array_equal(g.pair_indicator(), [[1, -1, 0], [0, 1, -1], [1, 0, -1]])
    assert g.with_pref([0.0, 0.0, 0.0], "other").pref_source == "other"


@pytest.mark.parametrize("over,match", [
    ({"item_id": ["a", "a", "c"]}, "line 2, field 'item_id': duplicate"),
    ({"model_2": ["m1", "m3", "m3"]}, "line 1, field 'model_2'"),
    ({"gold": [1.0, "bad", 0.0]}, "line 2, field 'gold'"),
    ({"text": ["x", None, "y"]}, "line 2, field 'text'"),
])
def test_pairwise_gains_validation(over, match):
    with pytest.raises(DataError, match=match):
        PairwiseGains(_items(**over), "gold", "judge")


def test_gains_file_roundtrip_and_errors(tmp_path):
    g = PairwiseGains(_items(), "human", "gpt")
    out = write_gains(g, tmp_path / "g.parquet")
    back = read_gains(out)
    assert (back.gold_source, back.pref_source) == ("human", "gpt")
    pd.testing.assert_frame_equal(back.items, g.items)
    bad = _items(gold=[1.0, "oops", 0.0])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad.csv, line 3, field 'gold'"):  # header is line 1
        read_gains(tmp_path / "bad.csv")
    _items().drop(columns=["pref"]).to_parquet(tmp_path / "nopref.parquet")
    with pytest.raises(DataError, match="missing columns"):
        read_gains(tmp_path / "nopref.parquet")


def _pandalm_frame():
    return pd.DataFrame({
        "idx": [0, 1, 2], "motivation_app": ["a"] * 3, "instruction": ["Fix this.", "Fix this.", "Sum."],
        "input": ["text", "text", ""], "model_1": ["llama-7b", "bloom-7b", "llama-7b"],
        "model_2": ["opt-7b", "opt-7b", "bloom-7b"], "response1": ["r"] * 3, "response2": ["s"] * 3,
        "human_1": [1, 2, 0], "human_2": [1, 2, 1], "human_3": [2, 0, 2],
        "human_majority": pd.array([1, 2, None], dtype="Int64"),
        "gpt35_label": pd.array([1, None, 0], dtype="Int64"),
        "pandalm7b_label": pd.array([2, 2, 1], dtype="Int64"),
    })


def test_pandalm_reader_on_a_small_file(tmp_path):
    p = tmp_path / "pairs.parquet"
    _pandalm_frame().to_parquet(p)
    assert is_pandalm(tmp_path) and is_pandalm(p) and not is_pandalm(tmp_path / "missing.parquet")
    g = read_pandalm(tmp_path, "gpt35")
    np.testing.assert_array_equal(g.gold, [1.0, -1.0, np.nan])        # majority null stays NaN
    np.testing.assert_array_equal(g.pref, [1.0, np.nan, 0.0])
    assert g.items["text"].tolist() == ["Fix this.\n\ntext", "Fix this.\n\ntext", "Sum."]
    assert g.items["query_id"].nunique() == 2
    assert g.meta["null_counts"] == {"human_majority": 1, "gpt35": 1, "pandalm7b": 0}
    assert g.counts()["gold_missing"] == 1 and g.counts()["pref_missing"] == 1
    # gold = mean of the three human gains: (1 + 1 - 1)/3, (-1 - 1 + 0)/3, (0 + 1 - 1)/3
    m = read_pandalm(p, "pandalm7b", gold="mean")
    np.testing.assert_allclose(m.gold, [1 / 3, -2 / 3, 0.0])
    np.testing.assert_array_equal(m.pref, [-1.0, -1.0, 1.0])
    with pytest.raises(DataError, match="unknown judge"):
        read_pandalm(p, "gpt4")


def test_pandalm_reader_errors_name_file_row_field(tmp_path):
    bad = _pandalm_frame()
    bad["pandalm7b_label"] = pd.array([2, 7, 1], dtype="Int64")
    bad.to_parquet(tmp_path / "pairs.parquet")
    with pytest.raises(DataError, match=r"pairs.parquet, line 2, field 'pandalm7b_label'"):
        read_pandalm(tmp_path, "gpt35")
    _pandalm_frame().drop(columns=["human_3"]).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="human_3"):
        read_pandalm(tmp_path / "x.parquet")


@pytest.mark.shared
def test_real_pandalm_file(pandalm_file):
    g = read_pandalm(pandalm_file, "gpt35")
    assert g.counts() == {"items": 999, "queries": 170, "gold_missing": 0, "pref_missing": 25, "both_missing": 0}
    assert len(g.models) == 5
    pairs = g.items.groupby(["model_1", "model_2"]).size()
    assert len(pairs) == 10 and pairs.min() >= 89
    # agreement with the human majority stated in SOURCE.md (over rows with a verdict: 697 / 974)
    has = np.isfinite(g.pref)
    assert np.mean(g.pref[has] == g.gold[has]) == pytest.approx(0.716, abs=0.0005)
    p7 = read_pandalm(pandalm_file, "pandalm7b")
    assert np.mean(p7.pref == p7.gold) == pytest.approx(0.668, abs=0.0005)
    assert p7.counts()["pref_missing"] == 0
    # orientation: llama-7b is the humans' favourite, so its signed gain is positive on average
    s = np.where(g.items["model_1"] == "llama-7b", g.gold, np.where(g.items["model_2"] == "llama-7b", -g.gold, np.nan))
    assert np.nanmean(s) > 0.3


# -- builder from observations --------------------------------------------------------------------

def _obs():
    rows = []
    scores = {("q1", "big"): [1.0, 0.0], ("q1", "small"): [0.0, 0.0], ("q2", "big"): [0.5, 0.5],
              ("q2", "small"): [1.0, 1.0], ("q3", "big"): [1.0, 1.0]}
    for (q, m), ss in scores.items():
        for d, s in enumerate(ss):
            rows.append({"dataset": "toy", "split": "train", "query_id": q, "model": m, "prompt_variant_id": -1,
                         "decode_id": d, "observation_type": "decoding_variation", "score": s, "cost": 0.1,
                         "question": f"question {q}", "output_tokens": 10 if m == "big" else 100})
    return pd.DataFrame(rows)


def test_gains_from_observations_gold_and_judge_file(tmp_path):
    pd.DataFrame({"query_id": ["q1", "q9"], "label": [2, 1]}).to_csv(tmp_path / "j.csv", index=False)
    g = gains_from_observations(_obs(), "big", "small", judge=read_judge_labels(tmp_path / "j.csv"),
                               judge_name="myjudge")
    assert g.items["query_id"].tolist() == ["q1", "q2"]            # q3 lacks 'small': not an item
    np.testing.assert_allclose(g.gold, [0.5 - 0.0, 0.5 - 1.0])
    np.testing.assert_array_equal(g.pref, [-1.0, np.nan])          # q2 has no verdict: NaN, counted
    assert g.meta["queries_missing_a_model"] == 1 and g.meta["judge_rows_unmatched"] == 1
    assert g.pref_source == "myjudge" and g.items["text"].iloc[0] == "question q1"


def test_simulated_judge_is_seeded_and_biased():
    obs = _obs()
    a = gains_from_observations(obs, "big", "small", judge=SimulatedJudge(seed=1))
    b = gains_from_observations(obs.sample(frac=1, random_state=0), "big", "small", judge=SimulatedJudge(seed=1))
    np.testing.assert_array_equal(a.pref, b.pref)                 # row order does not matter
    # q2: big scores 0.5, small 1.0 on every decode -> sign(-0.5) = -1 without bias; +1 with bias 0.6
    assert a.pref[1] == -1.0
    assert gains_from_observations(obs, "big", "small", judge=SimulatedJudge(bias=0.6)).pref[1] == 1.0
    # verbosity bias favours 'small' (100 tokens vs 10): log1p(10) - log1p(100) = -2.22 -> q2 stays -1,
    # q1 (big 1 or 0 vs small 0) becomes -1 whatever decode is drawn
    v = gains_from_observations(obs, "big", "small", judge=SimulatedJudge(length_bias=1.0))
    np.testing.assert_array_equal(v.pref, [-1.0, -1.0])
    assert v.meta["unknown_output_tokens"] == 0


def test_builder_errors(tmp_path):
    with pytest.raises(DataError, match="no observations"):
        gains_from_observations(_obs(), "big", "huge")
    pd.DataFrame({"query_id": ["q1", "q1"], "label": [1, 2]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"d.csv, line 3, field 'query_id'"):
        read_judge_labels(tmp_path / "d.csv")
    pd.DataFrame({"query_id": ["q1"], "label": [5]}).to_csv(tmp_path / "e.csv", index=False)
    with pytest.raises(DataError, match=r"e.csv, line 2, field 'label'"):
        read_judge_labels(tmp_path / "e.csv")
