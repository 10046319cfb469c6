"""Sentence encoders for the dueling bandit: the offline MiniLM and CCFT fine-tuned copies of it.

Models are sentence-transformers directories, loaded lazily (never at import time) and offline
(``HF_HUB_OFFLINE=1``). Embeddings are L2-normalised float64 arrays.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from caproute.core.runtime import Progress
from caproute.errors import ConfigError


def offline_env() -> None:
    """Never reach the Hugging Face hub: every model comes from a local directory."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_sentence_model(path: str | os.PathLike, threads: int | None = None):
    """A SentenceTransformer on CPU from a local directory (MiniLM or a CCFT fine-tuned copy), loaded
    by :func:`caproute.features.minilm.load_sentence_transformer`."""
    offline_env()
    path = Path(path)
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise ConfigError(f"{path}: not a sentence-transformers model directory")
    import torch

    from caproute.features.minilm import load_sentence_transformer

    if threads:
        torch.set_num_threads(int(threads))
    return load_sentence_transformer(path, what=path.name, device="cpu")


DEFAULT_MAX_SEQ_LENGTH = 128   # PROPOSED: MiniLM's own limit is 256; 128 halves CPU time on long prompts


class TextEncoder:
    """Lazily loaded sentence encoder; thread-safe ``encode``. Texts are truncated to
    ``max_seq_length`` word pieces."""

    def __init__(self, path: str | os.PathLike, batch_size: int = 64, threads: int | None = None,
                 max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH):
        self.path = str(path)
        self.batch_size = int(batch_size)
        self.threads = threads
        self.max_seq_length = int(max_seq_length)
        self._model = None
        self._lock = threading.Lock()

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                self._model = load_sentence_model(self.path, self.threads)
                self._model.max_seq_length = self.max_seq_length
            return self._model

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """(n, d) L2-normalised embeddings; ``progress`` shows a rich progress bar."""
        texts = [str(t) for t in texts]
        model = self.model
        if not texts:
            return np.zeros((0, model.get_sentence_embedding_dimension()))
        chunks = [texts[i:i + 4 * self.batch_size] for i in range(0, len(texts), 4 * self.batch_size)]
        out = []
        with Progress(f"encoding {len(texts)} texts" if progress else None, len(texts)) as advance:
            for chunk in chunks:
                with self._lock:   # one torch forward at a time per model
                    emb = model.encode(chunk, batch_size=self.batch_size, normalize_embeddings=True,
                                       show_progress_bar=False, convert_to_numpy=True)
                out.append(np.asarray(emb, dtype=np.float64))
                advance(len(chunk))
        return np.concatenate(out)

