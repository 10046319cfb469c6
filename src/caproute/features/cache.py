"""On-disk feature cache for frozen encoders, keyed by (encoder id, SHA-1 of the text).

Layout: ``<dir>/<encoder_id>/<shard>.npz``, each shard holding ``keys`` (SHA-1 hex, fixed-width
bytes) and ``X`` (float32 rows). New rows go to a new shard written atomically, so concurrent
processes (``--jobs``) never see half a file; many small shards are merged now and then.
Default directory: ``features/`` under the cache root (:func:`caproute.core.paths.cache_root`).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from caproute.core.atomic import atomic_file
from caproute.core.paths import cache_dir
from caproute.features.base import Encoder

MAX_SHARDS = 32


def default_cache_dir() -> Path:
    return cache_dir("features")


def text_key(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8")).hexdigest().encode("ascii")


class FeatureCache:
    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def _dir(self, encoder: Encoder) -> Path:
        return self.directory / encoder.encoder_id

    def _read(self, d: Path) -> tuple[list[Path], dict[bytes, np.ndarray]]:
        shards, table = sorted(d.glob("*.npz")) if d.is_dir() else [], {}
        for f in shards:
            try:
                with np.load(f, allow_pickle=False) as z:
                    keys, X = z["keys"], z["X"]
            except (FileNotFoundError, OSError, ValueError, KeyError):
                continue  # removed by a concurrent merge, or unreadable: recompute
            table.update(zip(keys.tolist(), X, strict=True))
        return shards, table

    def _write(self, d: Path, keys: list[bytes], X: np.ndarray) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        out = d / f"{uuid.uuid4().hex}.npz"
        with atomic_file(out) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, keys=np.array(keys, dtype="S40"), X=np.asarray(X, np.float32))
        return out

    def get(self, encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
        """Features of ``texts``: cached rows where present, the rest computed and stored."""
        texts = list(texts)
        keys = [text_key(t) for t in texts]
        d = self._dir(encoder)
        shards, table = self._read(d)
        missing = sorted({k: i for i, k in enumerate(keys) if k not in table}.items(), key=lambda kv: kv[1])
        if missing:
            new = encoder.transform([texts[i] for _, i in missing])
            new_keys = [k for k, _ in missing]
            table.update(zip(new_keys, new, strict=True))
            self._write(d, new_keys, new)
            if len(shards) + 1 > MAX_SHARDS:
                self._merge(d)
        if not texts:
            return np.zeros((0, encoder.dim), np.float32)
        return np.stack([table[k] for k in keys]).astype(np.float32, copy=False)

    def _merge(self, d: Path) -> None:
        shards, table = self._read(d)
        if not table:
            return
        self._write(d, list(table), np.stack(list(table.values())))
        for f in shards:
            f.unlink(missing_ok=True)

    def clear(self, encoder: Encoder | None = None) -> None:
        import shutil

        target = self._dir(encoder) if encoder is not None else self.directory
        shutil.rmtree(target, ignore_errors=True)


def encode(encoder: Encoder, texts: Sequence[str], cache: FeatureCache | bool | None = None) -> np.ndarray:
    """``encoder.transform(texts)``, through the disk cache for frozen encoders.

    ``cache``: a :class:`FeatureCache`, ``True`` for the default directory, ``None``/``False`` for none.
    Learned encoders (TF-IDF) are never cached on disk: they are cheap and their id changes per fit.
    """
    if cache is True:
        cache = FeatureCache()
    if cache and encoder.frozen:
        return cache.get(encoder, texts)
    return encoder.transform(texts)
