"""CCFT — Category-Calibrated Fine-Tuning (algorithms.md §B.3): model embeddings from categories.

1. Contrastive fine-tuning of the offline MiniLM on category-labelled queries (a few per
   category) with sentence-transformers' ``MultipleNegativesRankingLoss`` over (anchor, positive)
   pairs of the same category (:func:`finetune_encoder`).
2. Category embeddings xi_m = mean fine-tuned embedding of category m's offline queries.
3. A categorical weighting w_k (softmax over categories) per model k gives a_k = Σ_m w_{k,m} xi_m,
   L2-normalised. The four weightings (FOUND-2nd; constants PROPOSED):

   perf             s_{k,m} = Perf_{k,m}
   perf-cost        s_{k,m} = Perf_{k,m} - lambda Cost_{k,m}
   excel-perf-cost  s_{k,m} · 1[k is among the tau best models of category m]  (others 0, not -inf)
   excel-mask       beta_mask · 1[k is among the tau best of category m]       (PROPOSED: the review
                    text is truncated; a binary "excels" mask)

   w_k = softmax(s_k / temperature). PROPOSED: lambda = 1, Cost min-max normalised over models per
   category, tau = 3, beta_mask = 1, temperature = 1.
4. Data without categories: k-means pseudo-categories (k = 8 PROPOSED) on offline embeddings.

The math (tables, weightings, embeddings, k-means) is pure numpy/sklearn; fine-tuning needs torch
and sentence-transformers and is only imported when called.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

WEIGHTINGS = ("perf", "perf-cost", "excel-perf-cost", "excel-mask")
DEFAULT_LAMBDA = 1.0        # PROPOSED
DEFAULT_TAU = 3             # PROPOSED (of 11 models)
DEFAULT_BETA_MASK = 1.0     # PROPOSED
DEFAULT_TEMPERATURE = 1.0   # PROPOSED
DEFAULT_KMEANS = 8          # PROPOSED
DEFAULT_PER_CATEGORY = 5    # FOUND-2nd (reviewer 1: "5 example queries per category")
DEFAULT_EPOCHS = 2          # PROPOSED (1-3)
DEFAULT_LR = 2e-5           # PROPOSED


# ----------------------------------------------------------------------------------------------
# tables and weightings (pure)
def category_table(values: np.ndarray, categories: np.ndarray, order: Sequence) -> np.ndarray:
    """Per-model mean of ``values`` (n, K) within each category: (K, M) for categories in ``order``.

    NaN entries (a model not observed on a query) are skipped; a model never observed in a
    category gets the category's mean over models.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.empty((values.shape[1], len(order)))
    for m, c in enumerate(order):
        block = values[np.asarray(categories) == c]
        with np.errstate(invalid="ignore"), _quiet():
            col = np.nanmean(block, axis=0) if block.size else np.full(values.shape[1], np.nan)
        fill = np.nanmean(col) if np.isfinite(col).any() else 0.0
        out[:, m] = np.where(np.isfinite(col), col, fill)
    return out


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def minmax_over_models(table: np.ndarray) -> np.ndarray:
    """Min-max each column (category) of a (K, M) table over models; 0 where the column is constant."""
    lo = table.min(axis=0, keepdims=True)
    span = table.max(axis=0, keepdims=True) - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, (table - lo) / span, 0.0)


def top_tau_mask(scores: np.ndarray, tau: int) -> np.ndarray:
    """1[s_{k,m} >= s_{(tau),m}]: models among the tau best of each category (ties included), (K, M)."""
    k = scores.shape[0]
    tau = int(min(max(tau, 1), k))
    kth = -np.sort(-scores, axis=0)[tau - 1]           # tau-th largest per column
    return scores >= kth[None, :]


def weighting_scores(perf: np.ndarray, cost: np.ndarray, kind: str, *, lam: float = DEFAULT_LAMBDA,
                     tau: int = DEFAULT_TAU, beta_mask: float = DEFAULT_BETA_MASK) -> np.ndarray:
    """The logits s_k over categories for one of the four weightings: (K, M).

    perf (K, M): Perf_{k,m} in [0, 1]; cost (K, M): Cost_{k,m} already min-max normalised over models.
    """
    if kind not in WEIGHTINGS:
        raise ValueError(f"unknown weighting '{kind}' (choose from {', '.join(WEIGHTINGS)})")
    if kind == "perf":
        return perf.copy()
    s = perf - lam * cost
    if kind == "perf-cost":
        return s
    mask = top_tau_mask(s, tau)
    if kind == "excel-perf-cost":
        return np.where(mask, s, 0.0)
    return beta_mask * mask.astype(np.float64)


def softmax(s: np.ndarray, temperature: float = 1.0, axis: int = -1) -> np.ndarray:
    z = s / temperature
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def category_weights(perf: np.ndarray, cost: np.ndarray, kind: str, *, lam: float = DEFAULT_LAMBDA,
                     tau: int = DEFAULT_TAU, beta_mask: float = DEFAULT_BETA_MASK,
                     temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """w_k = softmax(s_k / temperature) over categories: (K, M), rows sum to 1."""
    return softmax(weighting_scores(perf, cost, kind, lam=lam, tau=tau, beta_mask=beta_mask), temperature)


def category_embeddings(E: np.ndarray, categories: np.ndarray, order: Sequence) -> np.ndarray:
    """xi_m = mean embedding of category m's queries: (M, d) for categories in ``order``."""
    cats = np.asarray(categories)
    return np.stack([E[cats == c].mean(axis=0) for c in order])


def model_embeddings(xi: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """a_k = Σ_m w_{k,m} xi_m, L2-normalised: (K, d)."""
    a = weights @ xi
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norms > 0, norms, 1.0)


def pseudo_categories(E: np.ndarray, k: int = DEFAULT_KMEANS, seed: int = 0) -> np.ndarray:
    """k-means labels (n,) of embeddings E (n, d); k is capped at n // 2 (at least 2 queries per cluster on average)."""
    from sklearn.cluster import KMeans

    k = int(max(1, min(k, len(E) // 2)))
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(np.asarray(E, dtype=np.float64))


# ----------------------------------------------------------------------------------------------
# contrastive fine-tuning
def ccft_batches(categories: np.ndarray, per_category: int, epochs: int, seed: int = 0
                 ) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
    """Pick ``per_category`` queries of each category and build MNRL batches of (anchor, positive)
    index pairs. Every ordered same-category pair is used once per epoch; a batch holds at most
    one pair per category, so MultipleNegativesRankingLoss's in-batch negatives are always queries
    of other categories (no same-category false negatives). Returns (chosen rows, batches)."""
    rng = np.random.default_rng(seed)
    cats = np.asarray(categories)
    chosen, per_cat_pairs = [], []
    for c in sorted(set(cats.tolist()), key=str):
        rows = np.flatnonzero(cats == c)
        if len(rows) < 2:
            continue
        pick = rng.choice(rows, size=min(per_category, len(rows)), replace=False)
        chosen.extend(pick.tolist())
        per_cat_pairs.append([(int(a), int(b)) for a in pick for b in pick if a != b])
    batches: list[list[tuple[int, int]]] = []
    for _ in range(epochs):
        queues = [list(rng.permutation(len(p))) for p in per_cat_pairs]
        while any(queues):
            batch = [per_cat_pairs[c][q.pop()] for c, q in enumerate(queues) if q]
            if len(batch) >= 2:
                batches.append(batch)
    return np.array(sorted(chosen), dtype=np.int64), batches


def _to_device(features: dict, device: str) -> dict:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def finetune_encoder(base: str | os.PathLike, texts: Sequence[str], categories: np.ndarray,
                     out_dir: str | os.PathLike, *, per_category: int = DEFAULT_PER_CATEGORY,
                     epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR, seed: int = 0,
                     threads: int | None = 1, max_seq_length: int = 128, freeze_embeddings: bool = True,
                     progress: bool = False, device: str | None = None) -> Path:
    """Contrastively fine-tune the sentence encoder at ``base`` and save it (safetensors) to ``out_dir``.

    MultipleNegativesRankingLoss (scale 20, cosine) over same-category (anchor, positive) pairs of
    ``per_category`` queries per category, AdamW at ``lr``, ``epochs`` passes. CPU, seeded.
    ``freeze_embeddings`` (PROPOSED, default on): the token/position embedding table (half of
    MiniLM's weights) stays fixed; with a few dozen pairs it would barely move anyway, and
    freezing it halves the time of a step on CPU.
    ``device``: ``auto`` | ``cpu`` | ``cuda`` (default ``$CAPROUTE_DEVICE``, else CPU; see
    :mod:`caproute.core.device`); the saved model is the same format on any device.
    """
    import torch

    try:   # sentence-transformers >= 6 moved the losses
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # pragma: no cover - older releases
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    from caproute.bandits.encoder import load_sentence_model
    from caproute.core.device import resolve_device

    if len(set(np.asarray(categories).tolist())) < 2:
        raise ValueError("CCFT needs at least two categories")
    torch.manual_seed(seed)
    dev = resolve_device(device)
    model = load_sentence_model(base, threads)
    if dev != "cpu":
        model.to(dev)
    model.max_seq_length = max_seq_length
    _, batches = ccft_batches(categories, per_category, epochs, seed)
    if freeze_embeddings:
        for name, p in model.named_parameters():
            if ".embeddings." in f".{name}":
                p.requires_grad_(False)
    loss_fn = MultipleNegativesRankingLoss(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    texts = list(texts)
    from caproute.core.runtime import Progress

    with Progress("CCFT fine-tuning" if progress else None, len(batches)) as advance:
        for batch in batches:
            tokenize = getattr(model, "preprocess", None) or model.tokenize
            anchors = tokenize([texts[a] for a, _ in batch])
            positives = tokenize([texts[p] for _, p in batch])
            if dev != "cpu":
                anchors, positives = _to_device(anchors, dev), _to_device(positives, dev)
            loss = loss_fn([anchors, positives], labels=None)
            opt.zero_grad()
            loss.backward()
            opt.step()
            advance()
    model.eval()
    # Built in a temporary sibling and swapped in: the old model stays in place until the new one
    # is complete (there is no moment without a model at out_dir).
    from caproute.core.atomic import staged_dir

    out_dir = Path(out_dir)
    with staged_dir(out_dir) as tmp:
        model.save(str(tmp), safe_serialization=True)
    return out_dir
