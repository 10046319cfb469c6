"""GraphRouter (DARS §A.10, after Feng et al. §E.4): an MLP edge predictor on (query, model) pairs.

Query node q = ReLU(Linear(D -> 128)(x)); model node m = ReLU(Linear(d_m -> 128)(f_m)); edge
feature [q, m, q * m, |q - m|] (512) -> MLP(256, 128) with ReLU -> 3 outputs (score, cost, std),
MSE loss against the clipped targets (over the observed pairs' edges on a partial grid); Adam lr 1e-3, weight decay 0, 50 epochs, batches of 256
queries (all m edges of each). Predictions clipped to [0, 1]. Values FOUND (reference
``methods/graph_router.py``); it is the simplified edge predictor, not the original heterogeneous GNN.

Model node features f_m (our choices, PROPOSED):
- The reference encodes a short description text per model with the query encoder. We do the
  same when the caller passes ``model_features`` (see :meth:`encoder_inputs`; ``train_pipeline``
  does). Descriptions come from the ``descriptions`` hyper-parameter ({model: text}); models
  without one get a text derived from the model name (``"google/gemma-3-12b-it"`` ->
  ``"google gemma 3 12b it large language model"``), since caproute has no curated descriptions.
- A one-hot model indicator is appended to f_m, so that two models whose descriptions encode to
  the same vector (e.g. all-zero TF-IDF rows when description words are outside the training
  vocabulary) remain distinct nodes. Without ``model_features``, f_m is the one-hot alone.
"""

from __future__ import annotations

import re

import numpy as np

from caproute.routers._torch import (
    Inputs,
    TorchRouterMixin,
    adam,
    batches,
    make_input_linear,
    mse,
    observed_mask,
)
from caproute.routers.base import Router, StatsPrediction, clip01, clipped_targets, register


def description_from_name(model: str) -> str:
    """A description text derived from a model id (used when no description is given)."""
    words = [w for w in re.split(r"[/_\-.:\s]+", model) if w]
    return " ".join(words + ["large", "language", "model"])


@register
class GraphRouter(TorchRouterMixin, Router):
    name = "graphrouter"
    param_spec = {"node_dim": ">= 1", "hidden": ">= 1", "epochs": ">= 1", "batch_size": ">= 1", "lr": "> 0",
                  "weight_decay": ">= 0"}
    beta_in_training = False

    def __init__(self, node_dim: int = 128, hidden: tuple[int, ...] = (256, 128), epochs: int = 50,
                 batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.0,
                 descriptions: dict | None = None, seed: int = 42):
        self.node_dim = node_dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.descriptions = descriptions
        self.seed = seed

    def description_texts(self, models) -> list[str]:
        given = self.descriptions or {}
        return [given.get(m) or description_from_name(m) for m in models]

    def encoder_inputs(self, encoder, models) -> dict:
        return {"model_features": encoder.transform(self.description_texts(models))}

    def _build(self, d_in: int, m: int, d_model: int, node_dim: int, hidden: list[int], gen):
        import torch
        from torch import nn

        from caproute.routers._torch import linear

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.query_proj = make_input_linear(d_in, node_dim, gen)
                self.model_proj = linear(d_model, node_dim, gen)
                dims = [4 * node_dim, *hidden, 3]
                self.edge = nn.ModuleList(linear(a, b, gen) for a, b in zip(dims[:-1], dims[1:], strict=True))
                self.register_buffer("model_features", torch.zeros(m, d_model))

            def forward(self, x):
                q = torch.relu(self.query_proj(x))
                mm = torch.relu(self.model_proj(self.model_features))
                n, k = q.shape[0], mm.shape[0]
                qe, me = q[:, None, :].expand(n, k, -1), mm[None, :, :].expand(n, k, -1)
                h = torch.cat([qe, me, qe * me, (qe - me).abs()], dim=2)
                for i, layer in enumerate(self.edge):
                    h = layer(h)
                    if i < len(self.edge) - 1:
                        h = torch.relu(h)
                return h   # (n, m, 3)

        return Net()

    def _train(self, X, supervision, gen, model_features: np.ndarray | None = None, **_):
        import torch

        m = len(self.models_)
        feats = np.eye(m, dtype=np.float32)
        if model_features is not None:
            mf = np.asarray(model_features, np.float32)
            if mf.ndim != 2 or mf.shape[0] != m:
                raise ValueError(f"model_features must be ({m}, d), got {mf.shape}")
            feats = np.concatenate([mf, feats], axis=1)
        target = torch.from_numpy(np.stack(clipped_targets(supervision), axis=2))   # (n, m, 3)
        mask = observed_mask(supervision)        # partial grid: edges of observed pairs only
        self.arch_ = {"d_in": int(X.shape[1]), "m": m, "d_model": int(feats.shape[1]),
                      "node_dim": int(self.node_dim), "hidden": [int(h) for h in self.hidden]}
        self.net_ = self._build(**self.arch_, gen=gen)
        with torch.no_grad():
            self.net_.model_features.copy_(torch.from_numpy(feats))
        inputs = Inputs(X, self.sparse_input_)
        opt = adam(self.net_.parameters(), self.lr, self.weight_decay)
        self.net_.train()
        for _ in range(int(self.epochs)):
            for idx in batches(inputs.n, self.batch_size, gen):
                loss = mse(self.net_(inputs.rows(idx.numpy())), target[idx], None if mask is None else mask[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def _predict(self, X, lam):
        out = clip01(self.net_(Inputs(X, self.sparse_input_).rows()).numpy().astype(np.float64))
        return StatsPrediction(self.models_, out[:, :, 0], out[:, :, 1], out[:, :, 2])
