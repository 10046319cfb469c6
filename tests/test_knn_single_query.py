"""kNN's few-rows sparse path (one query at a time, as the proxy decides) against the many-rows
path (scipy's sparse product) and a dense reference: the same neighbours, distances and decisions.

The decide fast path (TF-IDF rows as :class:`SparseRows` arrays, the sort of a few hundred
distances, per-model rows searched by index) against the general one (scipy CSR, partition +
tie check, the training subset copied): bit-for-bit the same neighbours, distances and decisions.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import caproute.routers.knn as knn
from caproute.features.tfidf import SparseRows
from caproute.routers.knn import SPARSE_ROWS_LOOP, dense_rows, knn_weights, nearest, sparse_rows_product


def reference(X: np.ndarray, train: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact distances in float64, nearest first, ties by training order."""
    d = np.sqrt(((X[:, None, :].astype(np.float64) - train[None, :, :].astype(np.float64)) ** 2).sum(-1))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, axis=1)


def fixture():
    rng = np.random.default_rng(7)
    train = rng.random((40, 30)).astype(np.float32)
    train[rng.random(train.shape) < 0.7] = 0.0
    train[5] = train[3]                      # a duplicated training row: exact ties
    queries = rng.random((20, 30)).astype(np.float32)
    queries[rng.random(queries.shape) < 0.7] = 0.0
    queries[0] = train[3]                    # an exact match of two training rows
    queries[1] = 0.0                         # an empty row
    queries[2] = train[10]
    return train, queries


def test_single_rows_match_the_reference_and_the_batch_path():
    train, queries = fixture()
    sq = np.einsum("ij,ij->i", train, train, dtype=np.float64)
    train_t = np.ascontiguousarray(train.T)
    k = 6
    ref_idx, ref_d = reference(queries, train, k)
    assert queries.shape[0] > SPARSE_ROWS_LOOP         # the batch goes through scipy's product
    b_idx, b_d = nearest(sp.csr_matrix(queries), train, sq, k, train_t)
    for i in range(queries.shape[0]):
        idx, d = nearest(sp.csr_matrix(queries[i:i + 1]), train, sq, k, train_t)
        np.testing.assert_array_equal(idx[0], ref_idx[i])
        np.testing.assert_array_equal(idx[0], b_idx[i])
        np.testing.assert_allclose(d[0], ref_d[i], atol=1e-5)
        np.testing.assert_allclose(d[0], b_d[i], atol=1e-6)
    np.testing.assert_array_equal(b_idx, ref_idx)
    idx, d = nearest(sp.csr_matrix(queries[:1]), train, sq, k, train_t)
    assert list(idx[0, :2]) == [3, 5] and d[0, 0] == 0.0 and d[0, 1] == 0.0   # exact matches first, by order


def test_sparse_rows_product_by_hand():
    X = sp.csr_matrix(np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]], np.float32))
    train_t = np.array([[1.0, 0.0], [0.5, 1.0], [0.0, 2.0]], np.float32)   # two training rows as columns
    x_sq, prod = sparse_rows_product(X, train_t)
    np.testing.assert_array_equal(x_sq, [4.0, 0.0, 10.0])
    np.testing.assert_array_equal(prod, [[1.0, 2.0], [0.0, 0.0], [1.0, 6.0]])


def test_tfidf_knn_decisions_one_text_at_a_time_equal_the_batch():
    from caproute.routers.pipeline import train_pipeline
    from caproute.serve.testing import synthetic_observations

    obs = synthetic_observations()
    pipe = train_pipeline(obs[obs["split"] == "train"], router="knn", features="tfidf")
    texts = list(dict.fromkeys(obs["question"]))             # 60 training texts (exact matches), 40 test
    batch = pipe.decide(texts, 0.3, 0.1)
    assert len(texts) > SPARSE_ROWS_LOOP
    for text, b in zip(texts, batch, strict=True):
        one = pipe.decide([text], 0.3, 0.1)[0]
        assert one.model == b.model
        for name in ("mu_q", "mu_c", "sigma_q", "utility"):
            np.testing.assert_allclose(list(getattr(one, name).values()), list(getattr(b, name).values()),
                                       atol=1e-6)


def as_rows(X: np.ndarray) -> SparseRows:
    """Dense rows as the CSR arrays TF-IDF hands kNN (no scipy object)."""
    m = sp.csr_matrix(X)
    return SparseRows(m.data, m.indices, m.indptr.astype(np.int64), m.shape)


@pytest.mark.parametrize("sort_all", [knn.SORT_ALL, 0])     # 0: partition + tie check at any size
def test_fast_path_equals_general_path_bit_for_bit(monkeypatch, sort_all):
    """Random sparse queries incl. an exact match of two duplicated training rows (a tie at 0), an
    empty query (every training row tied), in batches below and above SPARSE_ROWS_LOOP: SparseRows
    and scipy CSR give the same neighbours and distances; searching a subset of training rows by
    index gives what searching a copy of that subset gives."""
    monkeypatch.setattr(knn, "SORT_ALL", sort_all)
    train, queries = fixture()
    sq = np.einsum("ij,ij->i", train, train, dtype=np.float64)
    train_t = np.ascontiguousarray(train.T)
    subset = np.flatnonzero(np.random.default_rng(1).random(len(train)) < 0.6)
    subset = np.union1d(subset, [3, 5, 10])                  # keep the exact matches in the subset
    for k in (1, 6, len(train)):
        for start, size in ((0, 1), (1, 1), (0, 3), (0, SPARSE_ROWS_LOOP), (2, SPARSE_ROWS_LOOP + 1), (0, 20)):
            Q = queries[start:start + size]
            want = nearest(sp.csr_matrix(Q), train, sq, k, train_t)
            for got in (nearest(as_rows(Q), train, sq, k, train_t), nearest(as_rows(Q), train, sq, k)):
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
            ks = min(k, subset.size)
            want = nearest(sp.csr_matrix(Q), train[subset], sq[subset], ks, np.ascontiguousarray(train[subset].T))
            got = nearest(as_rows(Q), train, sq, ks, train_t, subset)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            want = nearest(Q, train[subset], sq[subset], ks)     # dense rows
            got = nearest(Q, train, sq, ks, rows=subset)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
    idx, d = nearest(as_rows(queries[1:2]), train, sq, 4, train_t)      # the empty query: ties by order
    np.testing.assert_array_equal(idx[0], np.argsort(sq, kind="stable")[:4])


def test_dense_rows_and_knn_weights_by_hand():
    X = sp.csr_matrix(np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]], np.float32))
    for rows in (np.array([2, 0]), np.array([1]), np.array([2, 2, 1])):
        np.testing.assert_array_equal(dense_rows(X, rows), X.toarray()[rows])
        np.testing.assert_array_equal(dense_rows(as_rows(X.toarray()), rows), X.toarray()[rows])
    dup = sp.csr_matrix((np.array([1.0, 2.0], np.float32), np.array([1, 1]), np.array([0, 2])), shape=(1, 3))
    np.testing.assert_array_equal(dense_rows(dup, np.array([0])), [[0.0, 3.0, 0.0]])   # duplicates add up
    w = knn_weights(np.array([[1.0, 3.0], [0.0, 2.0], [0.0, 0.0]]))
    # row 0: 1/1 and 1/3 normalised; row 1: the exact match takes all; row 2: two exact matches share
    np.testing.assert_allclose(w, [[0.75, 0.25], [1.0, 0.0], [0.5, 0.5]], atol=1e-8)
    np.testing.assert_allclose(knn_weights(np.array([[1.0, 3.0]])), w[:1], atol=1e-15)   # no exact match anywhere


def synthetic_pipeline(partial: bool):
    from caproute.routers.pipeline import train_pipeline
    from caproute.serve.testing import synthetic_observations

    obs = synthetic_observations()
    train = obs[obs["split"] == "train"]
    if partial:      # drop 40% of the (query, model) pairs: per-model neighbour sets
        pairs = train[["question", "model"]].drop_duplicates().sample(frac=0.4, random_state=1)
        drop = set(map(tuple, pairs.values.tolist()))
        train = train[[(q, m) not in drop for q, m in zip(train["question"], train["model"], strict=True)]]
    pipe = train_pipeline(train, router="knn", features="tfidf")
    assert (pipe.router.observed_ is not None) == partial
    return pipe, list(dict.fromkeys(obs["question"]))


@pytest.mark.parametrize("partial", [False, True])
def test_decide_equals_decisions_from_scipy_features(monkeypatch, partial):
    """decide() (SparseRows into kNN, distances sorted) and the general path (scipy CSR from
    features(), partition + tie check, then choose_features) give the same decisions to the last
    bit: training texts (exact matches), test texts, a text with no known term, an empty text, in
    batches of 1 to 20."""
    from caproute.routers.pipeline import decisions

    pipe, texts = synthetic_pipeline(partial)
    texts = texts[:12] + ["", "zzz qqq"] + texts[-10:]
    assert not pipe.features(["zzz qqq"]).nnz
    batches = [texts[s:s + size] for size in (1, 2, 5, SPARSE_ROWS_LOOP, SPARSE_ROWS_LOOP + 1, 20)
               for s in range(0, len(texts), size)]
    fast = [[d.to_dict() for d in pipe.decide(b, 0.3, 0.1)] for b in batches]
    monkeypatch.setattr(knn, "SORT_ALL", 0)
    general = [[d.to_dict() for d in decisions(*pipe.choose_features(pipe.features(b), 0.3, 0.1)[:2], 0.3, 0.1)]
               for b in batches]
    assert fast == general
    dense = pipe.router.predict_stats(pipe.features(texts).toarray())      # the dense product
    fast = pipe.predict_stats(texts)
    for name in ("mu_q", "mu_c", "sigma_q"):
        np.testing.assert_allclose(getattr(fast, name), getattr(dense, name), atol=1e-6)
