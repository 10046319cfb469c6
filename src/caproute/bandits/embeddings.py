"""Query and model embeddings for a duel experiment, with an on-disk cache.

Embedding names: ``<encoder>-<weighting>`` with encoder ``ccft`` (CCFT fine-tuned MiniLM) or
``minilm`` (untuned MiniLM) and weighting one of :data:`caproute.bandits.ccft.WEIGHTINGS`;
``ccft`` and ``minilm`` alone mean the ``excel-perf-cost`` weighting. Query embeddings x come
from the same encoder as the model embeddings a_k.

The cache (``cache_dir``) keeps fine-tuned encoders (``ccft-<key>/``, key = hash of the base
encoder, the training texts and categories and the hyper-parameters) and query embeddings
(``emb-<key>.npy``, key = hash of the encoder and the texts), so a rerun skips both steps.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from caproute.bandits import ccft
from caproute.bandits.arms import DEFAULT_RESIDUAL, add_residual, arm_summary, residual_directions
from caproute.bandits.features import auto_feature_scale
from caproute.core.paths import cache_dir
from caproute.errors import ConfigError

ENCODERS = ("ccft", "minilm")
DEFAULT_EMBEDDINGS = "ccft-excel-perf-cost"


def default_cache_dir() -> Path:
    return cache_dir("duel")


def parse_embeddings(name: str) -> tuple[str, str]:
    """'ccft-perf' -> ('ccft', 'perf'); 'minilm' -> ('minilm', 'excel-perf-cost')."""
    for enc in ENCODERS:
        if name == enc:
            return enc, "excel-perf-cost"
        if name.startswith(enc + "-") and name[len(enc) + 1:] in ccft.WEIGHTINGS:
            return enc, name[len(enc) + 1:]
    names = [f"{e}-{w}" for e in ENCODERS for w in ccft.WEIGHTINGS]
    raise ConfigError(f"unknown embeddings '{name}' (choose from {', '.join(names)}, ccft, minilm)")


@dataclass
class CCFTConfig:
    """CCFT hyper-parameters (see :mod:`caproute.bandits.ccft` for which are PROPOSED)."""

    per_category: int = ccft.DEFAULT_PER_CATEGORY
    epochs: int = ccft.DEFAULT_EPOCHS
    lr: float = ccft.DEFAULT_LR
    kmeans_k: int = ccft.DEFAULT_KMEANS
    lam: float = ccft.DEFAULT_LAMBDA
    tau: int = ccft.DEFAULT_TAU
    beta_mask: float = ccft.DEFAULT_BETA_MASK
    temperature: float = ccft.DEFAULT_TEMPERATURE
    seed: int = 0
    #: weight gamma of the per-model component rho_k (:mod:`caproute.bandits.arms`; PROPOSED;
    #: 0 = the paper's embeddings, which can tie models that are top-tau nowhere)
    residual: float = DEFAULT_RESIDUAL


@dataclass
class EmbeddingSet:
    """Embeddings under one name: X (n, d) for every query of the environment, arms (K, d)."""

    name: str
    X: np.ndarray
    arms: np.ndarray
    feature_scale: float
    encoder: str
    weights: np.ndarray
    categories: list = field(default_factory=list)
    #: {K, distinct, rank, tied} of ``arms`` (:func:`caproute.bandits.arms.arm_summary`)
    summary: dict = field(default_factory=dict)


def encoder_fingerprint(path: str | os.PathLike) -> str:
    """Cheap identity of a sentence-transformers directory: its JSON configs and the size, head and
    tail of its weight files."""
    p = Path(path)
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")):
        if not f.is_file():
            continue
        rel = str(f.relative_to(p))
        h.update(rel.encode())
        if f.suffix == ".json" or f.name == "vocab.txt":
            h.update(f.read_bytes())
        else:
            size = f.stat().st_size
            h.update(str(size).encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
                if size > (1 << 20):
                    fh.seek(-(1 << 20), 2)
                    h.update(fh.read())
    return h.hexdigest()


def _text_key(texts) -> str:
    from caproute.features.base import texts_hash

    return texts_hash(texts)


def cached_encode(encoder: str | os.PathLike, texts: list[str], cache_dir: str | os.PathLike | None,
                  *, threads: int | None = 1, progress: bool = False) -> np.ndarray:
    """L2-normalised embeddings (n, d) of ``texts``, read from / written to ``cache_dir``."""
    from caproute.bandits.encoder import DEFAULT_MAX_SEQ_LENGTH, TextEncoder

    f = None
    if cache_dir is not None:
        key = hashlib.sha256((encoder_fingerprint(encoder) + _text_key(texts)
                              + f"msl={DEFAULT_MAX_SEQ_LENGTH}").encode()).hexdigest()[:24]
        f = Path(cache_dir) / f"emb-{key}.npy"
        if f.exists():
            return np.load(f, allow_pickle=False)
    emb = TextEncoder(encoder, threads=threads).encode(texts, progress=progress)
    if f is not None:
        from caproute.core.atomic import atomic_file

        with atomic_file(f) as tmp, open(tmp, "wb") as fh:
            np.save(fh, emb, allow_pickle=False)
    return emb


def ccft_encoder(base: str | os.PathLike, texts: list[str], categories: np.ndarray, cfg: CCFTConfig,
                 cache_dir: str | os.PathLike, *, progress: bool = False) -> Path:
    """The CCFT fine-tuned encoder for these offline texts and categories (trained once, then cached)."""
    spec = {"base": encoder_fingerprint(base), "texts": _text_key(texts),
            "categories": _text_key([str(c) for c in categories]), "per_category": cfg.per_category,
            "epochs": cfg.epochs, "lr": cfg.lr, "seed": cfg.seed}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
    out = Path(cache_dir) / f"ccft-{key}"
    if not (out / "modules.json").exists():
        ccft.finetune_encoder(base, texts, categories, out, per_category=cfg.per_category,
                              epochs=cfg.epochs, lr=cfg.lr, seed=cfg.seed, progress=progress)
    return out


def build_embeddings(env, offline: np.ndarray, names: list[str], *, cfg: CCFTConfig | None = None,
                     cache_dir: str | os.PathLike | None = None, base: str | os.PathLike | None = None,
                     progress: bool = False) -> dict[str, EmbeddingSet]:
    """Embedding sets for ``names`` over every query of ``env``; categories, Perf/Cost tables,
    category embeddings and the CCFT training set all come from the ``offline`` rows only."""
    from caproute.features.minilm import minilm_path

    cfg = cfg or CCFTConfig()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    parsed = {n: parse_embeddings(n) for n in names}
    base = Path(base) if base is not None else minilm_path()
    texts = list(env.texts)
    off_texts = [texts[i] for i in offline]
    encoded: dict[str, tuple[str, np.ndarray]] = {}
    E_base = cached_encode(base, texts, cache_dir, progress=progress)
    encoded["minilm"] = (str(base), E_base)
    if env.categories is not None:
        cats = np.asarray(env.categories)[offline]
    else:   # PROPOSED: k-means on the untuned offline embeddings (the labels CCFT is trained on)
        cats = np.array([f"cluster-{c}" for c in ccft.pseudo_categories(E_base[offline], cfg.kmeans_k, cfg.seed)])
    order = sorted(set(cats.tolist()), key=str)
    if any(enc == "ccft" for enc, _ in parsed.values()):
        enc_dir = ccft_encoder(base, off_texts, cats, cfg, cache_dir, progress=progress)
        encoded["ccft"] = (str(enc_dir), cached_encode(enc_dir, texts, cache_dir, progress=progress))
    perf = ccft.category_table(env.perf[offline], cats, order)
    cost = ccft.minmax_over_models(ccft.category_table(env.cost[offline], cats, order))
    # per-query offline utility for the per-model component (same lambda as the perf-cost logit)
    scores_off = np.asarray(env.perf[offline], dtype=np.float64) - cfg.lam * np.nan_to_num(
        np.asarray(env.cost[offline], dtype=np.float64))
    out = {}
    for name, (enc, weighting) in parsed.items():
        path, E = encoded[enc]
        xi = ccft.category_embeddings(E[offline], cats, order)
        W = ccft.category_weights(perf, cost, weighting, lam=cfg.lam, tau=cfg.tau, beta_mask=cfg.beta_mask,
                                  temperature=cfg.temperature)
        arms = ccft.model_embeddings(xi, W)
        if cfg.residual:
            arms = add_residual(arms, residual_directions(E[offline], scores_off), cfg.residual)
        out[name] = EmbeddingSet(name, E, arms, auto_feature_scale(E[offline], arms), path, W, order,
                                 arm_summary(arms, env.models))
    return out
