"""EmbedLLM router (DARS §A.10, after Zhuang et al. §E.2). All values FOUND (reference
``methods/embed_llm.py``).

q_h = Linear(D -> 256)(x); model embeddings E (m x 256) ~ N(0, 0.02^2); bias b_m (zeros);
logit = q_h . E_m + b_m. The cost head Linear(256 -> 1) reads the model embedding only, so the
predicted cost is query-independent. Training: BCE-with-logits against the risk-adjusted target
clip(mu_q - beta * sigma_q, 0, 1) (beta = the supervision's beta: 0.2 for DARS, 0 single-shot)
plus 1.0 x MSE(cost) (on a partial grid both over the observed pairs only); Gaussian noise alpha = 0.05 on q_h and E; Adam lr 1e-3, weight decay 0,
20 epochs, batches of 2048 queries. Inference: mu_q = sigmoid(logit) (already risk-adjusted),
mu_c = cost head, sigma_q = 0 (the reference routes by sigmoid - lambda * cost, no sigma term).
"""

from __future__ import annotations

import numpy as np

from caproute.routers._torch import (
    Inputs,
    TorchRouterMixin,
    adam,
    batches,
    bce_with_logits,
    make_input_linear,
    mse,
    observed_mask,
)
from caproute.routers.base import Router, StatsPrediction, clip01, clipped_targets, register


def supervision_beta(supervision) -> float:
    return 0.2 if supervision.beta is None else float(supervision.beta)


@register
class EmbedLLMRouter(TorchRouterMixin, Router):
    name = "embedllm"
    param_spec = {"embed_dim": ">= 1", "epochs": ">= 1", "batch_size": ">= 1", "lr": "> 0",
                  "weight_decay": ">= 0", "noise": ">= 0", "cost_loss_weight": ">= 0"}

    def __init__(self, embed_dim: int = 256, epochs: int = 20, batch_size: int = 2048, lr: float = 1e-3,
                 weight_decay: float = 0.0, noise: float = 0.05, cost_loss_weight: float = 1.0,
                 seed: int = 42):
        self.embed_dim = embed_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.noise = noise
        self.cost_loss_weight = cost_loss_weight
        self.seed = seed

    def _build(self, d_in: int, m: int, dim: int, gen):
        import torch
        from torch import nn

        from caproute.routers._torch import linear

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.query_proj = make_input_linear(d_in, dim, gen)
                self.model_embed = nn.Parameter(torch.empty(m, dim).normal_(0.0, 0.02, generator=gen))
                self.model_bias = nn.Parameter(torch.zeros(m))
                self.cost_head = linear(dim, 1, gen)

            def forward(self, x, noise: float = 0.0, gen=None):
                q, e = self.query_proj(x), self.model_embed
                if noise > 0:
                    q = q + noise * torch.randn(q.shape, generator=gen)
                    e = e + noise * torch.randn(e.shape, generator=gen)
                logits = q @ e.T + self.model_bias
                cost = self.cost_head(e).squeeze(1).expand(logits.shape[0], -1)
                return logits, cost

        return Net()

    def _train(self, X, supervision, gen, **_):
        import torch

        mu_q, mu_c, sigma = clipped_targets(supervision)
        target = torch.from_numpy(np.clip(mu_q - supervision_beta(supervision) * sigma, 0, 1).astype(np.float32))
        cost = torch.from_numpy(mu_c)
        mask = observed_mask(supervision)        # partial grid: losses over observed pairs only
        self.arch_ = {"d_in": int(X.shape[1]), "m": len(self.models_), "dim": int(self.embed_dim)}
        self.net_ = self._build(**self.arch_, gen=gen)
        inputs = Inputs(X, self.sparse_input_)
        opt = adam(self.net_.parameters(), self.lr, self.weight_decay)
        self.net_.train()
        for _ in range(int(self.epochs)):
            for idx in batches(inputs.n, self.batch_size, gen):
                logits, pred_cost = self.net_(inputs.rows(idx.numpy()), self.noise, gen)
                mb = None if mask is None else mask[idx]
                loss = bce_with_logits(logits, target[idx], mb) + \
                    self.cost_loss_weight * mse(pred_cost, cost[idx], mb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def _predict(self, X, lam):
        import torch

        logits, cost = self.net_(Inputs(X, self.sparse_input_).rows())
        mu_q = clip01(torch.sigmoid(logits).numpy().astype(np.float64))
        mu_c = clip01(cost.numpy().astype(np.float64))
        return StatsPrediction(self.models_, mu_q, mu_c, np.zeros_like(mu_q))
