"""TF-IDF query features (DARS §A.5, FOUND): max_features 20,000, word 1-2 grams, min_df 1,
fitted on the training texts; scikit-learn defaults otherwise (lowercase, l2 norm, smooth idf).

Saved as ``vocabulary.json`` (terms in column order) plus ``idf.safetensors``; no pickle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caproute.errors import ConfigError, DataError
from caproute.features.base import Encoder

VOCAB_FILE = "vocabulary.json"
IDF_FILE = "idf.safetensors"


@dataclass(frozen=True)
class SparseRows:
    """Rows of a sparse matrix as the three CSR arrays, without a scipy object: ``data`` float32
    (nnz,), ``indices`` int32 (nnz,) sorted within each row, ``indptr`` int64 (n + 1,), ``shape``
    (n, d).

    What :meth:`TfidfEncoder.transform_rows` returns. A router that reads CSR arrays (kNN, a few
    rows at a time) takes it as it is: for one query, scipy's constructor checks cost more than the
    arithmetic. :meth:`tocsr` makes the scipy matrix (the same numbers).
    """

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    def tocsr(self):
        import scipy.sparse as sp

        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)


class TfidfEncoder(Encoder):
    name = "tfidf"
    frozen = False

    def __init__(self, max_features: int = 20000, ngram_max: int = 2, min_df: int = 1):
        self.max_features = int(max_features)
        self.ngram_max = int(ngram_max)
        self.min_df = int(min_df)
        self._vec = None
        self._analyzer = None

    def params(self) -> dict[str, Any]:
        return {"max_features": self.max_features, "ngram_max": self.ngram_max, "min_df": self.min_df}

    def _new_vectorizer(self):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(max_features=self.max_features, ngram_range=(1, self.ngram_max),
                               min_df=self.min_df, dtype=np.float32)

    def fit(self, texts: Sequence[str]) -> TfidfEncoder:
        texts = list(texts)
        if not texts:
            raise DataError("cannot fit TF-IDF on zero texts", source="tfidf encoder")
        vec = self._new_vectorizer()
        try:
            vec.fit(texts)
        except ValueError as e:   # e.g. "empty vocabulary; perhaps the documents only contain stop words"
            raise DataError(f"cannot fit TF-IDF: {e}", source="tfidf encoder") from None
        self._vec = vec
        self._hash = None
        self._analyzer = None
        return self

    def _check(self):
        if self._vec is None:
            raise RuntimeError("TfidfEncoder is not fitted; call fit() first")

    def transform_rows(self, texts: Sequence[str]) -> SparseRows:
        """TF-IDF rows (n, d) as :class:`SparseRows`: raw term counts x idf, rows L2-normalised,
        float32.

        The same numbers as ``TfidfVectorizer.transform`` (tested), computed directly: for a
        single query scikit-learn's input validation costs more than the arithmetic.
        """
        self._check()
        if self._analyzer is None:
            self._analyzer = self._vec.build_analyzer()
            self._vocab = self._vec.vocabulary_
            self._idf = np.asarray(self._vec.idf_, dtype=np.float64)
        vocab, analyze = self._vocab, self._analyzer
        indptr, indices, counts = [0], [], []
        for text in texts:
            row: dict[int, int] = {}
            for tok in analyze(text):
                j = vocab.get(tok)
                if j is not None:
                    row[j] = row.get(j, 0) + 1
            cols = sorted(row)
            indices.extend(cols)
            counts.extend(row[c] for c in cols)
            indptr.append(len(indices))
        indices = np.asarray(indices, dtype=np.int32)
        data = np.asarray(counts, dtype=np.float64) * self._idf[indices]
        indptr = np.asarray(indptr, dtype=np.int64)
        lengths = indptr[1:] - indptr[:-1]
        row_of = np.repeat(np.arange(len(lengths)), lengths)
        norms = np.sqrt(np.bincount(row_of, weights=data * data, minlength=len(lengths)))
        data = data / np.where(norms > 0, norms, 1.0)[row_of]
        return SparseRows(data.astype(np.float32), indices, indptr, (len(lengths), len(vocab)))

    def transform_sparse(self, texts: Sequence[str]):
        """scipy CSR matrix (n, d) float32: :meth:`transform_rows` as a scipy matrix."""
        return self.transform_rows(texts).tocsr()

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.transform_sparse(texts).toarray(), dtype=np.float32)

    @property
    def dim(self) -> int:
        self._check()
        return len(self._vec.vocabulary_)

    def _terms(self) -> list[str]:
        terms = [""] * len(self._vec.vocabulary_)
        for t, i in self._vec.vocabulary_.items():
            terms[int(i)] = t
        return terms

    def state_hash(self) -> str:
        self._check()
        if getattr(self, "_hash", None) is None:
            h = hashlib.sha256(json.dumps([self.params(), self._terms()]).encode())
            h.update(np.ascontiguousarray(self._vec.idf_, dtype=np.float64).tobytes())
            self._hash = h.hexdigest()
        return self._hash

    def _save_state(self, path: Path) -> list[str]:
        from safetensors.numpy import save_file

        self._check()
        (path / VOCAB_FILE).write_text(json.dumps(self._terms(), ensure_ascii=False))
        save_file({"idf": np.ascontiguousarray(self._vec.idf_, dtype=np.float64)}, str(path / IDF_FILE))
        return [VOCAB_FILE, IDF_FILE]

    def _load_state(self, path: Path, meta: dict[str, Any]) -> None:
        from safetensors.numpy import load_file

        terms = json.loads((path / VOCAB_FILE).read_text())
        idf = load_file(str(path / IDF_FILE))["idf"]
        if not isinstance(terms, list) or len(terms) != idf.shape[0]:
            raise ConfigError(f"{path / VOCAB_FILE}: {len(terms)} terms but {idf.shape[0]} idf weights")
        vec = self._new_vectorizer()
        vec.vocabulary_ = {t: i for i, t in enumerate(terms)}
        vec.idf_ = idf
        self._vec = vec
        self._hash = None
        self._analyzer = None
