"""The cache-directory rule: one root for every on-disk cache (features, ONNX exports, model2vec
distillations, duel embeddings and fine-tuned encoders).

Root: ``$CAPROUTE_CACHE_DIR``, else ``$CAPROUTE_CACHE`` (the older name the duel commands read,
kept as an alias), else ``~/.cache/caproute``. Each cache is a named folder below it.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "CAPROUTE_CACHE_DIR"
CACHE_ENV_ALIAS = "CAPROUTE_CACHE"


def cache_root() -> Path:
    """The root of caproute's caches (read at call time, never at import)."""
    root = os.environ.get(CACHE_ENV) or os.environ.get(CACHE_ENV_ALIAS)
    return Path(root) if root else Path.home() / ".cache" / "caproute"


def cache_dir(name: str) -> Path:
    """The folder of one cache, e.g. ``cache_dir("features")``."""
    return cache_root() / name
