"""CCFT (algorithms.md §B.3): Perf/Cost tables, the four weightings, category and model embeddings,
k-means pseudo-categories, MNRL batches, and a real fine-tuning run of the offline MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

from caproute.bandits import ccft
from caproute.bandits.embeddings import CCFTConfig, build_embeddings, parse_embeddings
from caproute.errors import ConfigError

# 3 models x 2 categories, by hand
PERF = np.array([[0.9, 0.2], [0.5, 0.6], [0.1, 0.8]])
COST = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])


def test_category_tables_by_hand():
    values = np.array([[1.0, 0.0], [0.0, np.nan], [0.5, 0.5]])
    cats = np.array(["a", "a", "b"])
    t = ccft.category_table(values, cats, ["a", "b"])
    # model 0: a -> mean(1, 0) = .5, b -> .5 ; model 1: a -> mean(0, nan) = 0, b -> .5
    np.testing.assert_allclose(t, [[0.5, 0.5], [0.0, 0.5]])
    np.testing.assert_allclose(ccft.minmax_over_models(np.array([[2.0, 1.0], [4.0, 1.0], [3.0, 1.0]])),
                               [[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]])


def test_top_tau_mask_and_weighting_scores_by_hand():
    np.testing.assert_array_equal(ccft.top_tau_mask(PERF, 1), [[True, False], [False, False], [False, True]])
    np.testing.assert_array_equal(ccft.top_tau_mask(PERF, 2), [[True, False], [True, True], [False, True]])
    np.testing.assert_allclose(ccft.weighting_scores(PERF, COST, "perf"), PERF)
    s = PERF - COST                                   # lambda = 1: [[-.1, .2], [.5, -.4], [-.4, .3]]
    np.testing.assert_allclose(ccft.weighting_scores(PERF, COST, "perf-cost"), s)
    # tau = 1: category 0's best is model 1 (.5), category 1's best is model 2 (.3); the rest -> 0
    np.testing.assert_allclose(ccft.weighting_scores(PERF, COST, "excel-perf-cost", tau=1),
                               [[0.0, 0.0], [0.5, 0.0], [0.0, 0.3]])
    np.testing.assert_allclose(ccft.weighting_scores(PERF, COST, "excel-mask", tau=1, beta_mask=2.0),
                               [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="unknown weighting"):
        ccft.weighting_scores(PERF, COST, "perf-latency")


def test_weights_and_model_embeddings():
    w = ccft.category_weights(PERF, COST, "perf", temperature=1.0)
    e = np.exp(PERF)
    np.testing.assert_allclose(w, e / e.sum(1, keepdims=True))
    sharp = ccft.category_weights(PERF, COST, "perf", temperature=0.01)
    np.testing.assert_allclose(sharp.argmax(1), [0, 1, 1])
    xi = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    a = ccft.model_embeddings(xi, np.array([[1.0, 0.0], [0.5, 0.5]]))
    np.testing.assert_allclose(a, [[1.0, 0.0, 0.0], [1 / np.sqrt(5), 2 / np.sqrt(5), 0.0]])
    E = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 1.0]])
    np.testing.assert_allclose(ccft.category_embeddings(E, np.array(["a", "a", "b"]), ["a", "b"]),
                               [[2.0, 1.0], [0.0, 1.0]])


def test_pseudo_categories_recover_blobs():
    rng = np.random.default_rng(0)
    centers = np.eye(4) * 5
    labels = np.repeat(np.arange(4), 10)
    E = centers[labels] + rng.normal(scale=0.1, size=(40, 4))
    found = ccft.pseudo_categories(E, k=4, seed=0)
    # same partition up to renaming
    assert len({(a, b) for a, b in zip(labels, found, strict=True)}) == 4
    assert len(set(ccft.pseudo_categories(E[:5], k=8))) == 2      # k capped at n // 2


def test_mnrl_batches_hold_one_pair_per_category():
    cats = np.array(["a"] * 6 + ["b"] * 4 + ["c"] * 1)
    chosen, batches = ccft.ccft_batches(cats, per_category=3, epochs=2, seed=0)
    assert (cats[chosen] == "a").sum() == 3 and (cats[chosen] == "b").sum() == 3 and "c" not in cats[chosen]
    pairs = [p for b in batches for p in b]
    assert len(pairs) == 2 * (6 + 6)                      # every ordered pair once per epoch
    for b in batches:
        assert len({cats[a] for a, _ in b}) == len(b) >= 2  # at most one pair per category
        assert all(cats[a] == cats[p] and a != p for a, p in b)


def test_parse_embeddings():
    assert parse_embeddings("ccft") == ("ccft", "excel-perf-cost")
    assert parse_embeddings("minilm-perf-cost") == ("minilm", "perf-cost")
    with pytest.raises(ConfigError, match="unknown embeddings"):
        parse_embeddings("openai-perf")


@pytest.mark.slow
def test_finetune_and_build_embeddings_with_real_minilm(tmp_path):
    """A real CCFT run on the offline MiniLM: same-category queries move closer together."""
    import torch

    from caproute.bandits.environment import DuelEnvironment

    torch.set_num_threads(1)
    math_q = [f"What is {a} plus {b}?" for a, b in [(2, 3), (7, 8), (10, 5), (4, 4), (9, 1), (6, 2)]]
    code_q = [f"Write a Python function that {t}." for t in
              ["reverses a string", "sorts a list", "counts words", "parses JSON", "reads a file", "merges dicts"]]
    texts = math_q + code_q
    n = len(texts)
    env = DuelEnvironment("toy", np.array([f"q{i}" for i in range(n)]), texts, ("m0", "m1", "m2"),
                          np.zeros((n, 3)), np.array([[0.9, 0.1, 0.5]] * 6 + [[0.1, 0.9, 0.5]] * 6),
                          np.array([[0.0, 1.0, 0.5]] * n), np.zeros((n, 3)), np.array(["math"] * 6 + ["code"] * 6))
    offline = np.arange(n)
    cfg = CCFTConfig(per_category=4, epochs=1)
    sets = build_embeddings(env, offline, ["minilm-perf", "ccft-perf", "ccft-excel-mask"], cfg=cfg,
                            cache_dir=tmp_path)
    base, tuned = sets["minilm-perf"].X, sets["ccft-perf"].X
    cats = env.categories

    def margin(E):
        S = E @ E.T
        same = (cats[:, None] == cats[None, :]) & ~np.eye(n, dtype=bool)
        return S[same].mean() - S[cats[:, None] != cats[None, :]].mean()

    assert margin(tuned) > margin(base)
    assert not np.allclose(base, tuned)
    for s in sets.values():
        np.testing.assert_allclose(np.linalg.norm(s.arms, axis=1), 1.0)
        assert s.X.shape == (n, 384) and s.arms.shape == (3, 384) and s.feature_scale > 0
    # model 0 is best at math, model 1 at code: their embeddings lean to those categories
    xi = np.stack([tuned[cats == c].mean(0) for c in ("code", "math")])
    a = sets["ccft-perf"].arms
    assert (a[0] @ xi[1] - a[0] @ xi[0]) > 0 > (a[1] @ xi[1] - a[1] @ xi[0])
    encoders = list(tmp_path.glob("ccft-*"))
    assert len(encoders) == 1 and (encoders[0] / "model.safetensors").exists()
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pkl"))
    # a second build reads the caches (no new encoder, same arrays)
    again = build_embeddings(env, offline, ["ccft-perf"], cfg=cfg, cache_dir=tmp_path)
    np.testing.assert_array_equal(again["ccft-perf"].X, tuned)
    assert len(list(tmp_path.glob("ccft-*"))) == 1
