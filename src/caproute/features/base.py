"""The encoder contract: query texts -> feature matrix (n, d) float32.

- ``fit(texts)`` learns state from training texts (a no-op for frozen, pretrained encoders);
  ``transform(texts)`` returns a dense ``np.ndarray`` (n, d) of float32.
- ``encoder_id``: name plus a hash of the fitted state; the feature cache keys on it, so two
  TF-IDF encoders fitted on different texts never share cache entries.
- ``save(dir)`` / :func:`load_encoder`: no pickle. ``encoder.json`` (format version, name,
  params, SHA-256 of every state file) plus state files (JSON, safetensors) written by the encoder.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from caproute.core import artifact
from caproute.errors import ConfigError

ENCODER_FORMAT_VERSION = 1
ENCODER_FILE = "encoder.json"


class Encoder(ABC):
    name: ClassVar[str] = ""
    #: True for pretrained encoders whose output does not depend on fit() (MiniLM, model2vec):
    #: their features are worth caching on disk.
    frozen: ClassVar[bool] = False

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able)."""

    @abstractmethod
    def fit(self, texts: Sequence[str]) -> Encoder:
        """Learn from training texts; returns self."""

    @abstractmethod
    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Features (n, d) float32."""

    def fit_transform(self, texts: Sequence[str]) -> np.ndarray:
        return self.fit(texts).transform(texts)

    @property
    @abstractmethod
    def dim(self) -> int:
        """Feature dimension d (after fit for learned encoders)."""

    @abstractmethod
    def state_hash(self) -> str:
        """Hex digest identifying the fitted state (or the pretrained weights)."""

    @property
    def encoder_id(self) -> str:
        return f"{self.name}-{self.state_hash()[:16]}"

    # -- persistence ------------------------------------------------------------------------------
    @abstractmethod
    def _save_state(self, path: Path) -> list[str]:
        """Write state files into ``path``; return their names."""

    @abstractmethod
    def _load_state(self, path: Path, meta: dict[str, Any]) -> None:
        """Restore state written by :meth:`_save_state`."""

    def _meta(self) -> dict[str, Any]:
        """Extra JSON-able metadata stored in encoder.json."""
        return {}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        files = self._save_state(path)
        digests = {f: artifact.file_sha256(path / f) for f in files}
        config = {"encoder": self.name, "params": self.params(), "meta": self._meta(),
                  "files_sha256": digests, "encoder_id": self.encoder_id}
        return artifact.write_artifact(path, ENCODER_FILE, config, version=ENCODER_FORMAT_VERSION)


def load_encoder(path: str | Path) -> Encoder:
    """Load an encoder saved with :meth:`Encoder.save` (checks format version and checksums)."""
    from caproute.features import encoder_class

    path = Path(path)
    config, _ = artifact.read_artifact(path, ENCODER_FILE, version=ENCODER_FORMAT_VERSION, what="encoder")
    for name, digest in config.get("files_sha256", {}).items():
        f = path / name
        if not f.exists():
            raise ConfigError(f"{f}: missing encoder state file")
        artifact.check_sha256(f, digest)
    enc = encoder_class(config.get("encoder", "?"))(**config.get("params", {}))
    enc._load_state(path, config.get("meta", {}))
    return enc


def texts_hash(texts: Sequence[str]) -> str:
    """SHA-256 of a sequence of texts (each length-prefixed): the one text-hash rule of the
    embedding caches (fitted encoder states, duel query embeddings, CCFT training sets)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()
