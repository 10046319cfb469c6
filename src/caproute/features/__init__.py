"""Query features: TF-IDF, MiniLM sentence embeddings, model2vec (distilled from MiniLM).

``get_encoder(name, **kw)`` builds an encoder; ``load_encoder(dir)`` restores a saved one;
``encode(encoder, texts, cache=...)`` goes through the on-disk cache for frozen encoders.
Nothing heavy is imported until an encoder is used.
"""

from __future__ import annotations

from importlib import import_module

from caproute.errors import ConfigError
from caproute.features.base import Encoder, load_encoder
from caproute.features.cache import FeatureCache, encode

ENCODERS = {
    "tfidf": "caproute.features.tfidf:TfidfEncoder",
    "minilm": "caproute.features.minilm:MiniLMEncoder",
    "minilm-onnx": "caproute.features.minilm:MiniLMOnnxEncoder",
    "minilm-int8": "caproute.features.minilm:MiniLMInt8Encoder",
    "model2vec": "caproute.features.model2vec:Model2VecEncoder",
}


def encoder_class(name: str) -> type[Encoder]:
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder '{name}' (available: {', '.join(ENCODERS)})")
    module, cls = ENCODERS[name].split(":")
    return getattr(import_module(module), cls)


def get_encoder(name: str, **kw) -> Encoder:
    """A new (unfitted) encoder by name: ``tfidf``, ``minilm`` (``minilm-onnx`` / ``minilm-int8``:
    the same model on ONNX Runtime, fp32 / int8) or ``model2vec``."""
    return encoder_class(name)(**kw)


__all__ = ["ENCODERS", "Encoder", "FeatureCache", "encode", "encoder_class", "get_encoder", "load_encoder"]
