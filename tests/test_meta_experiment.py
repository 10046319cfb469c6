"""Monte Carlo experiment, report and the ``caproute meta`` command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from caproute.causal.experiment import MetaConfig, prepare_dataset, run_meta, split_items
from caproute.causal.gain import METHODS
from caproute.causal.labels import PairwiseGains, write_gains
from caproute.causal.report import markdown_table, write_report
from caproute.errors import DataError

TOPICS = ["algebra proof", "french poem", "python bug", "tax law"]


def toy_gains(n_queries=48, seed=0) -> PairwiseGains:
    """Queries on 4 topics, 3 models, 2 pairs per query. Gold: 'big' wins on the first two topics;
    the judge is biased towards 'big' everywhere; a few labels are missing on purpose."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        topic = q % 4
        for a, b in (("big", "small"), ("mid", "small")):
            base = (0.8 if topic < 2 else -0.6) if a == "big" else 0.2
            gold = float(np.clip(np.round(base + rng.normal(0, 0.4)), -1, 1))
            pref = float(np.clip(np.round(base + 0.7 * (a == "big") + rng.normal(0, 0.4)), -1, 1))
            rows.append({"item_id": f"{q}-{a}", "query_id": f"q{q}", "text": f"{TOPICS[topic]} question {q}",
                         "model_1": a, "model_2": b, "gold": gold, "pref": pref})
    df = pd.DataFrame(rows)
    df.loc[[3, 10], "gold"] = np.nan
    df.loc[[5, 20, 21], "pref"] = np.nan
    return PairwiseGains(df, "toy-gold", "toy-judge")


def tfidf(texts):
    from caproute.features import get_encoder

    return np.asarray(get_encoder("tfidf").fit_transform(texts).astype(float))


def test_split_is_grouped_nested_and_counts_missing_gold():
    g = toy_gains()
    ds = prepare_dataset({"toy": g}, encoder=tfidf)
    s = split_items(ds, 0.25, seed=7)
    train_q, test_q = set(ds.query_codes[s.train]), set(ds.query_codes[s.test])
    assert not train_q & test_q                               # a query never sits on both sides
    assert np.isfinite(ds.gold[s.test]).all() and np.isfinite(ds.gold[s.gold_order]).all()
    assert set(s.gold_order) <= set(s.train)
    missing_in_test = int(sum(np.isnan(ds.gold[i]) for i in np.flatnonzero(np.isin(ds.query_codes, list(test_q)))))
    assert s.unusable_test == missing_in_test
    again = split_items(ds, 0.25, seed=7)
    np.testing.assert_array_equal(again.gold_order, s.gold_order)   # gold_n = 5 is a prefix of gold_n = 10
    assert ds.pair.shape == (96, 3)


def test_run_meta_is_identical_for_any_jobs_and_reports(tmp_path):
    ds = prepare_dataset({"toy": toy_gains()}, name="toy", encoder=tfidf)
    cfg = MetaConfig(gold_ns=(12,), runs=2, trees=5, pca_dim=10, test_fraction=0.25)
    one = run_meta(ds, cfg, jobs=1, progress=False)
    two = run_meta(ds, cfg, jobs=2, progress=False)
    assert one.curves.keys() == two.curves.keys()
    for k in one.curves:
        np.testing.assert_array_equal(one.curves[k], two.curves[k])
    rows = one.rows()
    assert {r["method"] for r in rows} == set(METHODS) and len(rows) == len(METHODS)
    r0 = rows[0]
    assert {"method", "judge", "gold_n", "efficiency_gain", "efficiency_gain_std", "curve"} <= set(r0)
    assert len(r0["curve"]) == 61 and r0["efficiency_gain"] == pytest.approx(max(r0["curve"]))
    assert len(r0["runs_at_peak"]) == 2 and np.mean(r0["runs_at_peak"]) == pytest.approx(r0["efficiency_gain"])
    # the se of a mean over resplits is Nadeau-Bengio corrected: std * sqrt(1/2 + 0.25/0.75)
    assert r0["efficiency_gain_se"] == pytest.approx(r0["efficiency_gain_std"] * np.sqrt(1 / 2 + 1 / 3))
    # judge-free baselines ignore the preference labels entirely: same curve as in a run with other labels
    d = one.diagnostics[("toy", 12)]
    assert d["n_gold"] == 12 and d["pref_unlabelled"] >= 0 and "meta-r.overlap.n_clipped_low" in d
    files = write_report(one, tmp_path / "rep")
    assert {f.name for f in files} == {"curves_toy_gold12.png", "table.md", "diagnostics.json"}
    assert (tmp_path / "rep" / "curves_toy_gold12.png").stat().st_size > 5000
    assert "| toy | 12 | meta-r |" in (tmp_path / "rep" / "table.md").read_text()
    diag = json.loads((tmp_path / "rep" / "diagnostics.json").read_text())
    assert diag["label_counts"]["toy"]["pref_missing"] == 3


def test_judge_free_methods_do_not_read_preferences():
    g = toy_gains()
    flipped = g.with_pref(-g.pref, "flipped")
    ds = prepare_dataset({"toy": g, "flipped": flipped}, encoder=tfidf)
    res = run_meta(ds, MetaConfig(gold_ns=(10,), runs=1, trees=5, pca_dim=5, methods=("gold-only", "pooled")),
                   progress=False)
    np.testing.assert_array_equal(res.curves[("toy", 10, "gold-only")], res.curves[("flipped", 10, "gold-only")])
    assert not np.array_equal(res.curves[("toy", 10, "pooled")], res.curves[("flipped", 10, "pooled")])


def test_semi_synthetic_judges_are_built_from_their_covariate():
    """prepare_dataset turns a judge marked synthetic 'length' into the length-bias judge (query
    word count vs median) and 'pc1' into the PC1 judge; an unknown construction is an error."""
    import dataclasses

    from caproute.causal.pandalm import length_bias_verdicts, query_bias_verdicts

    g = toy_gains()
    g = dataclasses.replace(g, items=g.items.assign(text=[t + " extra words" * (int(q[1:]) % 3)
                                                          for t, q in zip(g.items["text"], g.items["query_id"], strict=True)]))
    texts = g.items.groupby("query_id", sort=False)["text"].first().tolist()
    lb = dataclasses.replace(g, pref_source="lb", meta={"synthetic": "length"})
    pc = dataclasses.replace(g, pref_source="pc", meta={"synthetic": "pc1"})
    ds = prepare_dataset({"real": g, "lb": lb, "pc": pc}, encoder=tfidf)
    np.testing.assert_array_equal(ds.prefs["real"], g.pref)
    np.testing.assert_array_equal(ds.prefs["lb"], length_bias_verdicts(g.pref, ds.query_codes, texts))
    np.testing.assert_array_equal(ds.prefs["pc"], query_bias_verdicts(g.pref, ds.query_codes, ds.embeddings))
    assert not np.array_equal(ds.prefs["lb"], ds.prefs["pc"], equal_nan=True)
    with pytest.raises(DataError, match="unknown semi-synthetic"):
        prepare_dataset({"x": dataclasses.replace(g, meta={"synthetic": "tone"})}, encoder=tfidf)


def test_default_effect_model_is_the_papers_forest():
    from caproute.causal.gain import MetaRouterGain

    assert MetaConfig().effect == "forest"
    assert MetaRouterGain().effect_model == "forest"


def test_config_and_data_errors():
    with pytest.raises(DataError, match="gold_n"):
        MetaConfig(gold_ns=(0,))
    with pytest.raises(DataError, match="unknown methods"):
        MetaConfig(methods=("meta-x",))
    with pytest.raises(DataError, match="overlap"):
        MetaConfig(overlap="trim")
    g = toy_gains()
    other = PairwiseGains(g.items.iloc[:-1], "toy-gold", "x")
    with pytest.raises(DataError, match="other items"):
        prepare_dataset({"a": g, "b": other}, encoder=tfidf)
    ds = prepare_dataset({"toy": g}, encoder=tfidf)
    with pytest.raises(DataError, match="gold_n = 500"):
        run_meta(ds, MetaConfig(gold_ns=(500,), runs=1, trees=3), progress=False)


def test_markdown_table_by_hand():
    rows = [{"method": "pooled", "judge": "j", "gold_n": 5, "efficiency_gain": 1.234, "efficiency_gain_std": 0.5,
             "efficiency_gain_se": 0.25, "peak_usage": 0.4, "efficiency_gain_per_query": 0.01, "runs": 4},
            {"method": "meta-r", "judge": "j", "gold_n": 5, "efficiency_gain": 2.0, "efficiency_gain_std": 0.1,
             "efficiency_gain_se": 0.05, "peak_usage": 0.5, "efficiency_gain_per_query": 0.02, "runs": 4}]
    lines = markdown_table(rows).splitlines()
    assert lines[2] == "| j | 5 | meta-r | 2.00 | 0.10 | 0.05 | 0.50 | 0.0200 | 4 |"   # method order of METHODS
    assert lines[3].startswith("| j | 5 | pooled | 1.23 |")


@pytest.mark.slow
def test_cli_meta_on_a_gains_file(tmp_path):
    from caproute.cli import app

    write_gains(toy_gains(), tmp_path / "toy.parquet")
    runner = CliRunner()
    res = runner.invoke(app, ["meta", "--data", str(tmp_path / "toy.parquet"), "--gold-n", "12", "--runs", "2",
                              "--trees", "5", "--json", str(tmp_path / "out.json"), "--report", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    title = " ".join(res.output.split())            # the table's title wraps at the terminal width
    assert "effect model forest, overlap clip" in title and "se Nadeau-Bengio corrected" in title
    rows = json.loads((tmp_path / "out.json").read_text())
    assert {r["method"] for r in rows} == set(METHODS) and {r["judge"] for r in rows} == {"toy-judge"}
    assert (tmp_path / "rep" / "curves_toy-judge_gold12.png").exists()
    bad = runner.invoke(app, ["meta", "--data", str(tmp_path / "toy.parquet"), "--judge", "gpt35",
                              "--json", str(tmp_path / "x.json"), "--report", str(tmp_path / "r2")])
    assert isinstance(bad.exception, DataError) and "holds preferences of 'toy-judge'" in str(bad.exception)
    assert not (tmp_path / "x.json").exists()                    # nothing half-written


@pytest.mark.slow
@pytest.mark.shared
def test_real_pandalm_experiment(pandalm_file):
    """One Monte Carlo run on the real file with the real MiniLM encoder (small forests)."""
    from caproute.causal.api import load_pairwise

    gains = load_pairwise(pandalm_file)
    assert set(gains) == {"gpt35", "pandalm7b"}
    ds = prepare_dataset(gains, name="pandalm")
    assert ds.embeddings.shape == (170, 384) and ds.pair.shape == (999, 5)
    res = run_meta(ds, MetaConfig(gold_ns=(50,), runs=1, trees=10), progress=False)
    rows = {(r["judge"], r["method"]): r for r in res.rows()}
    assert len(rows) == 14
    # every trained router beats random routing on the human gold labels of unseen instructions
    assert all(r["efficiency_gain"] > 0 for r in rows.values())
    d = res.diagnostics[("gpt35", 50)]
    assert d["n_gold"] == 50 and d["pref_unlabelled"] > 0           # GPT-3.5's null verdicts are counted
    assert res.diagnostics[("pandalm7b", 50)]["pref_unlabelled"] == 0
