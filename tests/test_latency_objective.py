"""The PROPOSED latency term of the utility (issue 27 item 4), hand-computed:
U = mu_q - lambda mu_c - lambda_t mu_latency - beta sigma_q, lambda_t = 0 by default (DARS unchanged)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from caproute.routers.base import StatsPrediction
from caproute.supervise.stats import capability_stats
from caproute.supervise.utility import DEFAULT_LAMBDA_T, utility


def test_latency_term_by_hand():
    # two models: A = (q .9, c .5, s .1, 2.0 s), B = (q .8, c .1, s .2, 0.5 s); lambda .1, beta .2
    mu_q, mu_c, sig, lat = [0.9, 0.8], [0.5, 0.1], [0.1, 0.2], [2.0, 0.5]
    # lambda_t = 0: 0.9 - 0.05 - 0.02 = 0.83 and 0.8 - 0.01 - 0.04 = 0.75 (A wins)
    np.testing.assert_allclose(utility(mu_q, mu_c, sig, 0.1, 0.2, mu_latency=lat), [0.83, 0.75])
    # lambda_t = 0.1: A 0.83 - 0.2 = 0.63, B 0.75 - 0.05 = 0.70 (B wins)
    np.testing.assert_allclose(utility(mu_q, mu_c, sig, 0.1, 0.2, mu_latency=lat, lam_t=0.1), [0.63, 0.70])
    assert DEFAULT_LAMBDA_T == 0.0


def test_lambda_t_zero_is_bitwise_the_papers_utility():
    rng = np.random.default_rng(0)
    q, c, s, t = rng.random((4, 50, 6))
    assert np.array_equal(utility(q, c, s, 0.05, 0.2), q - 0.05 * c - 0.2 * s)
    assert np.array_equal(utility(q, c, s, 0.05, 0.2, mu_latency=t, lam_t=0.0), utility(q, c, s, 0.05, 0.2))


def test_lambda_t_needs_latencies_and_is_nonnegative():
    with pytest.raises(ValueError, match="needs mu_latency"):
        utility([1.0], [0.0], [0.0], lam_t=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        utility([1.0], [0.0], [0.0], mu_latency=[1.0], lam_t=-0.1)


def test_prediction_utility_with_latency():
    p = StatsPrediction(("a", "b"), np.array([[0.9, 0.8]]), np.array([[0.5, 0.1]]), np.array([[0.1, 0.2]]),
                        mu_latency=np.array([[2.0, 0.5]]))
    np.testing.assert_allclose(p.utility(0.1, 0.2), [[0.83, 0.75]])
    np.testing.assert_allclose(p.utility(0.1, 0.2, lam_t=0.1), [[0.63, 0.70]])


def test_mu_latency_statistic_by_hand():
    """Pair (q1, a): latencies 1, 2, 6 -> 3.0; (q1, b): 0.5 -> 0.5; the numpy and SQL paths agree."""
    import duckdb

    rows = [("d", "train", "q1", "a", -1, r, "decoding_variation", 1.0, 0.1, lat) for r, lat in enumerate([1, 2, 6])]
    rows.append(("d", "train", "q1", "b", -1, 0, "decoding_variation", 0.0, 0.2, 0.5))
    obs = pd.DataFrame(rows, columns=["dataset", "split", "query_id", "model", "prompt_variant_id", "decode_id",
                                      "observation_type", "score", "cost_norm", "latency_s"])
    st = capability_stats(obs).set_index("model")
    assert st.loc["a", "mu_latency"] == 3.0 and st.loc["b", "mu_latency"] == 0.5
    assert "mu_latency" not in capability_stats(obs.drop(columns="latency_s")).columns
    from caproute.supervise.stats import capability_stats_sql

    con = duckdb.connect()
    con.register("obs", obs.rename(columns={"cost_norm": "cost"}))
    sq = capability_stats_sql(con, "obs", {"d": (0.0, 1.0)}).set_index("model")
    assert sq.loc["a", "mu_latency"] == 3.0 and sq.loc["b", "mu_latency"] == 0.5
