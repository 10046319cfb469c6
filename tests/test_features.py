"""Query features: TF-IDF fit/transform/save/load, feature text, the on-disk cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from caproute.errors import ConfigError, DataError
from caproute.features import FeatureCache, encode, get_encoder, load_encoder
from caproute.features.base import Encoder
from caproute.features.text import query_texts

TEXTS = ["What is 2 + 2?", "Name the capital of France.", "What is the capital of Spain?",
         "Integrate x squared from 0 to 1."]


def test_tfidf_matches_sklearn_reference_settings():
    from sklearn.feature_extraction.text import TfidfVectorizer

    enc = get_encoder("tfidf").fit(TEXTS)
    ref = TfidfVectorizer(max_features=20000, ngram_range=(1, 2), min_df=1).fit(TEXTS)
    X = enc.transform(TEXTS + ["capital of nowhere"])
    assert X.dtype == np.float32 and X.shape == (5, len(ref.vocabulary_)) and enc.dim == X.shape[1]
    np.testing.assert_allclose(X, ref.transform(TEXTS + ["capital of nowhere"]).toarray(), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(X[:4], axis=1), 1.0, rtol=1e-6)   # l2-normalised rows


def test_tfidf_hand_computed_idf():
    # 2 documents; "a" in both, "b" in one: idf = ln((1+n)/(1+df)) + 1 (smooth idf)
    enc = get_encoder("tfidf", ngram_max=1).fit(["aa bb", "aa"])
    X = enc.transform(["aa bb"])
    idf_a, idf_b = np.log(3 / 3) + 1, np.log(3 / 2) + 1
    expected = np.array([idf_a, idf_b]) / np.hypot(idf_a, idf_b)
    np.testing.assert_allclose(X[0], expected, rtol=1e-6)


def test_tfidf_max_features():
    enc = get_encoder("tfidf", max_features=3).fit(TEXTS)
    assert enc.dim == 3


def test_tfidf_save_load_round_trip(tmp_path):
    enc = get_encoder("tfidf").fit(TEXTS)
    enc.save(tmp_path / "e")
    assert not list(tmp_path.rglob("*.pkl"))
    enc2 = load_encoder(tmp_path / "e")
    np.testing.assert_array_equal(enc.transform(TEXTS), enc2.transform(TEXTS))
    assert enc.encoder_id == enc2.encoder_id


def test_tfidf_id_depends_on_fitted_state():
    a = get_encoder("tfidf").fit(TEXTS)
    b = get_encoder("tfidf").fit(TEXTS[:2])
    assert a.encoder_id != b.encoder_id
    assert a.encoder_id == get_encoder("tfidf").fit(TEXTS).encoder_id


def test_encoder_load_errors(tmp_path):
    enc = get_encoder("tfidf").fit(TEXTS)
    d = enc.save(tmp_path / "e")
    (d / "vocabulary.json").write_text(json.dumps(["x"]))
    with pytest.raises(ConfigError, match="checksum"):
        load_encoder(d)
    d2 = enc.save(tmp_path / "e2")
    cfg = json.loads((d2 / "encoder.json").read_text())
    cfg["format_version"] = 99
    (d2 / "encoder.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="format_version"):
        load_encoder(d2)
    with pytest.raises(ConfigError, match="not a saved encoder"):
        load_encoder(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="unknown encoder"):
        get_encoder("word2vec")


def test_tfidf_errors():
    with pytest.raises(DataError, match="zero texts"):
        get_encoder("tfidf").fit([])
    with pytest.raises(DataError, match="vocabulary"):
        get_encoder("tfidf").fit(["", "  "])
    with pytest.raises(RuntimeError, match="not fitted"):
        get_encoder("tfidf").transform(["x"])


def test_query_texts_uses_feature_text():
    obs = pd.DataFrame({"query_id": ["b", "a", "a", "b"], "question": ["Q b", "Q a", "Q a", "Q b"],
                        "context": [None, "C" * 1500, "C" * 1500, None]})
    ids, texts = query_texts(obs)
    assert list(ids) == ["a", "b"]
    assert texts[0] == "C" * 1200 + "\nQuestion: Q a" and texts[1] == "Q b"
    with pytest.raises(DataError, match="question"):
        query_texts(obs.assign(question=[None, "Q a", "Q a", ""]))


class CountingEncoder(Encoder):
    """A frozen encoder that counts calls (to test the cache, not a stand-in for a real one)."""

    name = "counting"
    frozen = True

    def __init__(self):
        self.calls = 0

    def params(self):
        return {}

    def fit(self, texts):
        return self

    def transform(self, texts):
        self.calls += len(texts)
        return np.array([[len(t), t.count("a")] for t in texts], np.float32)

    @property
    def dim(self):
        return 2

    def state_hash(self):
        return "0" * 64

    def _save_state(self, path):
        return []

    def _load_state(self, path, meta):
        pass


def test_feature_cache_computes_each_text_once(tmp_path):
    enc = CountingEncoder()
    cache = FeatureCache(tmp_path)
    X1 = cache.get(enc, ["aa", "b", "aa"])
    assert enc.calls == 2
    np.testing.assert_array_equal(X1, [[2, 2], [1, 0], [2, 2]])
    X2 = FeatureCache(tmp_path).get(enc, ["b", "ccc", "aa"])
    assert enc.calls == 3                      # only "ccc" is new
    np.testing.assert_array_equal(X2, [[1, 0], [3, 0], [2, 2]])
    assert (tmp_path / enc.encoder_id).is_dir()


def test_feature_cache_merges_shards(tmp_path, monkeypatch):
    import caproute.features.cache as cache_mod

    monkeypatch.setattr(cache_mod, "MAX_SHARDS", 3)
    enc, cache = CountingEncoder(), FeatureCache(tmp_path)
    for i in range(6):
        cache.get(enc, [f"text {i}"])
    assert len(list((tmp_path / enc.encoder_id).glob("*.npz"))) <= 3
    np.testing.assert_array_equal(cache.get(enc, [f"text {i}" for i in range(6)])[:, 0], 6)
    assert enc.calls == 6


def test_encode_caches_only_frozen(tmp_path):
    enc = get_encoder("tfidf").fit(TEXTS)
    encode(enc, TEXTS, FeatureCache(tmp_path))
    assert not any(tmp_path.iterdir())


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPROUTE_CACHE_DIR", str(tmp_path))
    assert FeatureCache().directory == tmp_path / "features"


def test_tfidf_fast_transform_matches_sklearn_on_varied_text():
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    train = [" ".join(rng.choice(words, rng.integers(1, 40))) for _ in range(80)]
    test = [" ".join(rng.choice(words + ["unseen", "ÜBER", "naïve"], rng.integers(0, 40))) for _ in range(40)]
    test += ["", "unseen only", "W1 w1 w1, w2! w3?"]
    enc = get_encoder("tfidf", max_features=500).fit(train)
    ref = TfidfVectorizer(max_features=500, ngram_range=(1, 2), min_df=1).fit(train)
    np.testing.assert_allclose(enc.transform(test), ref.transform(test).toarray(), rtol=2e-6, atol=1e-7)
    assert not enc.transform([""]).any()            # no known term: a zero row, not NaN


def test_tfidf_rows_are_the_csr_arrays_of_transform_sparse():
    """transform_rows (what kNN reads without a scipy object) holds the arrays of transform_sparse."""
    from caproute.features.tfidf import SparseRows

    enc = get_encoder("tfidf").fit(TEXTS)
    texts = [TEXTS[0], "", "no known term here zzz", TEXTS[-1] + " " + TEXTS[0]]
    rows, csr = enc.transform_rows(texts), enc.transform_sparse(texts)
    assert isinstance(rows, SparseRows) and rows.shape == csr.shape == (4, enc.dim)
    assert rows.data.dtype == np.float32 and rows.indptr.tolist() == csr.indptr.tolist()
    np.testing.assert_array_equal(rows.indices, csr.indices)
    np.testing.assert_array_equal(rows.data, csr.data)
    assert rows.indptr[1] == rows.indptr[2]                 # the empty text: an empty row
    np.testing.assert_array_equal(rows.tocsr().toarray(), enc.transform(texts))
