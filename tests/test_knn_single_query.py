"""kNN's few-rows sparse path (one query at a time, as the proxy decides) against the many-rows
path (scipy's sparse product) and a dense reference: the same neighbours, distances and decisions."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from caproute.routers.knn import SPARSE_ROWS_LOOP, nearest, sparse_rows_product


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
