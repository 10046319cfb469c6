"""RouteLLM's matrix-factorisation router (§E.1), generalised from two models to n.

Score of model M on query q (FOUND, official ``matrix_factorization/model.py``):
delta(M, q) = w_2^T ( normalize(v_M) * (W_1^T e(q)) ), W_1: D -> dim without bias, w_2: dim -> 1
without bias, dim = 128, v_M ~ N(0, 1) (``nn.Embedding`` init). P(a beats b | q) =
sigmoid(delta(a, q) - delta(b, q)), trained with binary cross-entropy (Bradley-Terry).

caproute's training data (PROPOSED, the paper trains on Chatbot Arena votes instead): for every
training query and every model pair (a < b), the label is 1 if U_a > U_b, 0 if U_a < U_b and
0.5 on a tie, where U = mu_q - lam * mu_c - beta * sigma_q is the supervision's utility at the
hyper-parameter ``lam`` (default 0.05) and the supervision's beta; on a partial grid only pairs of
two models observed on the query. Optimiser (PROPOSED): Adam lr
1e-3, weight decay 1e-5, 20 epochs, batches of 1024 pairs.

Routing generalises "route to the strong model iff P >= alpha" to argmax_M delta(M, q). The
router predicts a policy: ``predict_stats`` returns ``kind="policy"`` with softmax(delta) over the
models (the Plackett-Luce probability of each model being the best) in ``mu_q``. lambda is fixed
at training time (``lam``).
"""

from __future__ import annotations

import numpy as np

from caproute.routers._torch import Inputs, TorchRouterMixin, adam, batches
from caproute.routers.base import Router, StatsPrediction, clipped_targets, register
from caproute.routers.embedllm import supervision_beta
from caproute.supervise.labels import pairwise_preferences
from caproute.supervise.utility import DEFAULT_LAMBDA, utility


@register
class MFRouter(TorchRouterMixin, Router):
    name = "mf"
    param_spec = {"dim": ">= 1", "epochs": ">= 1", "batch_size": ">= 1", "lr": "> 0", "weight_decay": ">= 0",
                  "lam": ">= 0"}

    def __init__(self, dim: int = 128, epochs: int = 20, batch_size: int = 1024, lr: float = 1e-3,
                 weight_decay: float = 1e-5, lam: float = DEFAULT_LAMBDA, seed: int = 42):
        self.dim = dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lam = lam
        self.seed = seed

    def _build(self, d_in: int, m: int, dim: int, gen):
        import torch
        from torch import nn

        from caproute.routers._torch import input_matmul, linear

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.P = nn.Parameter(torch.empty(m, dim).normal_(0.0, 1.0, generator=gen))
                bound = 1.0 / float(np.sqrt(d_in))          # nn.Linear(D, dim, bias=False) init
                self.text_proj = nn.Parameter(torch.empty(d_in, dim).uniform_(-bound, bound, generator=gen))
                self.classifier = linear(dim, 1, gen, bias=False)

            def forward(self, x):
                q = input_matmul(x, self.text_proj)                       # (n, dim)
                v = torch.nn.functional.normalize(self.P, p=2, dim=1)     # (m, dim)
                return (q[:, None, :] * v[None, :, :]) @ self.classifier.weight[0]   # (n, m)

        return Net()

    def _train(self, X, supervision, gen, **_):
        import torch
        import torch.nn.functional as F

        mu_q, mu_c, sigma = clipped_targets(supervision)
        u = utility(mu_q, mu_c, sigma, float(self.lam), supervision_beta(supervision), dtype=np.float32)
        # partial grid: only pairs of two models observed on the query (never a prior)
        prefs = pairwise_preferences(u, observed=getattr(supervision, "observed", None))
        if prefs["label"].size == 0:
            raise ValueError("mf needs a query with two observed models to learn a preference")
        q, a, b = (torch.from_numpy(prefs[k].astype(np.int64)) for k in ("query", "a", "b"))
        label = torch.from_numpy(prefs["label"].astype(np.float32))
        self.arch_ = {"d_in": int(X.shape[1]), "m": len(self.models_), "dim": int(self.dim)}
        self.net_ = self._build(**self.arch_, gen=gen)
        inputs = Inputs(X, self.sparse_input_)
        opt = adam(self.net_.parameters(), self.lr, self.weight_decay)
        self.net_.train()
        for _ in range(int(self.epochs)):
            for idx in batches(label.shape[0], self.batch_size, gen):
                # score only the distinct queries of the batch, then gather the pairs
                uq, inv = torch.unique(q[idx], return_inverse=True)
                delta = self.net_(inputs.rows(uq.numpy()))
                logit = delta[inv, a[idx]] - delta[inv, b[idx]]
                loss = F.binary_cross_entropy_with_logits(logit, label[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def scores(self, X) -> np.ndarray:
        """delta(M, q) for every query (n, m)."""
        from caproute.routers._torch import torch_threads

        X = self._validate_X(X)
        with torch_threads() as torch, torch.no_grad():
            return self.net_(Inputs(X, self.sparse_input_).rows()).numpy().astype(np.float64)

    def _predict(self, X, lam):
        import torch

        delta = self.net_(Inputs(X, self.sparse_input_).rows())
        probs = torch.softmax(delta, dim=1).numpy().astype(np.float64)
        zeros = np.zeros_like(probs)
        return StatsPrediction(self.models_, probs, zeros, zeros.copy(), kind="policy")
