"""Hand-computed diagnostics (§A.7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from caproute.supervise.diagnostics import diagnose, disagreement, outcome_instability, winner_flip_rate


def frame(scores: dict[str, list[float]], costs: dict[str, float] | None = None, query="q"):
    rows = []
    for m, vals in scores.items():
        for o, v in enumerate(vals):
            rows.append(dict(dataset="d", split="train", query_id=query, model=m,
                             prompt_variant_id=o // 2, decode_id=o % 2,
                             observation_type="prompt_variation", score=v,
                             cost=(costs or {}).get(m, 0.0)))
    return pd.DataFrame(rows)


def test_primitives():
    assert outcome_instability(np.array([0, 1, 0.5]), np.array([1, 1, 0.5])) == pytest.approx(1 / 3)
    labels = np.array([[0, 0, 0, 0], [0, 1, 0, -1], [2, 2, -1, -1]])
    wfr, distinct = winner_flip_rate(labels)
    assert wfr == pytest.approx(1 / 3)
    np.testing.assert_array_equal(distinct, [1, 2, 1])
    # DA labels [0, 0, 1]: mismatches over the 9 valid cells: row1 one (the 1), row2 two
    assert disagreement(labels, np.array([0, 0, 1])) == pytest.approx(3 / 9)


def test_diagnose_hand_computed():
    # query q1: A = [1,1,1,1], B = [1,0,0,1] ; costs A 1.0, B 0.0 (normalised A=1, B=0)
    # u_A = 1 - .05 = .95 always; u_B = [1, 0, 0, 1] -> winners B, A, A, B -> flips
    # query q2: A = [0,0,0,0], B = [1,1,1,1] -> winner B always, no flip
    df = pd.concat([frame({"A": [1, 1, 1, 1], "B": [1, 0, 0, 1]}, {"A": 1.0, "B": 0.0}, "q1"),
                    frame({"A": [0, 0, 0, 0], "B": [1, 1, 1, 1]}, {"A": 1.0, "B": 0.0}, "q2")])
    cost = df["cost"].to_numpy()
    d = diagnose(df, cost, lam=0.05)
    assert d.outcome_instability == pytest.approx(1 / 4)   # only (q1, B) varies
    assert d.winner_flip_rate == pytest.approx(1 / 2)
    # DA: q1 mu_A - .05 = .95 vs mu_B = .5 -> A; single labels B,A,A,B -> 2 of 4 disagree; q2 none
    assert d.single_vs_da_disagreement == pytest.approx(2 / 8)
    # (q1,B): rewrites [1,0] and [0,1] -> rewrite means .5,.5: input 0, output .25; others 0
    assert d.input_variance == pytest.approx(0.0)
    assert d.output_variance == pytest.approx(0.25 / 4)
    assert d.winners_per_query == {1: 0.5, 2: 0.5}
