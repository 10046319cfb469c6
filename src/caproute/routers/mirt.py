"""MIRT router (DARS §A.10, an IRT-Router variant, §E.3). All values FOUND (reference
``methods/mirt.py``).

Three MIRT heads (score, cost, std). Each: query ability theta(x) = MLP(D -> 128 -> 16) (ReLU
between), model discrimination a_m in R^16 ~ N(0, 0.02^2), difficulty b_m = 0 at init,
P = sigmoid(theta(x) . a_m - b_m). Loss BCE(score logits, mu_q) + 1.0 MSE(P_cost, mu_c) +
0.5 MSE(P_std, sigma_q) (over the observed pairs on a partial grid); Adam lr 1e-3, weight decay 0, 30 epochs, batches of 256. Roles are
flipped relative to IRT-Router (there the LLM is the examinee). Predictions in [0, 1].
The three heads' first layers are stored as one D x 384 matrix (same function, same Adam
updates, one sparse product instead of three).

``min_steps`` (our option, default 0 = the reference): train at least that many optimizer steps,
i.e. max(epochs, ceil(min_steps / batches per epoch)) epochs. 30 epochs of batches of 256 are only
30 Adam steps on a 200-query training set; from its N(0, 0.02^2) discrimination the model then
barely leaves its initial state and routes almost every query to one seed-dependent model (the
bimodal results of issue 14). ``--param mirt.min_steps=1000`` trains it to convergence.
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

HEADS = ("score", "cost", "std")


@register
class MIRTRouter(TorchRouterMixin, Router):
    name = "mirt"
    param_spec = {"latent_dim": ">= 1", "hidden": ">= 1", "epochs": ">= 1", "batch_size": ">= 1", "lr": "> 0",
                  "weight_decay": ">= 0", "cost_loss_weight": ">= 0", "std_loss_weight": ">= 0", "min_steps": ">= 0"}
    beta_in_training = False

    def __init__(self, latent_dim: int = 16, hidden: int = 128, epochs: int = 30, batch_size: int = 256,
                 lr: float = 1e-3, weight_decay: float = 0.0, cost_loss_weight: float = 1.0,
                 std_loss_weight: float = 0.5, min_steps: int = 0, seed: int = 42):
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.cost_loss_weight = cost_loss_weight
        self.std_loss_weight = std_loss_weight
        self.min_steps = min_steps
        self.seed = seed

    def _build(self, d_in: int, m: int, hidden: int, latent: int, gen):
        import torch
        from torch import nn

        from caproute.routers._torch import linear

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                # the first Linear(D -> hidden) of the three heads, side by side; each block is
                # initialised as its own nn.Linear would be (bound 1 / sqrt(D) for all)
                self.first = make_input_linear(d_in, 3 * hidden, gen)
                self.second = nn.ModuleList(linear(hidden, latent, gen) for _ in HEADS)
                self.discrimination = nn.Parameter(torch.empty(3, m, latent).normal_(0.0, 0.02, generator=gen))
                self.difficulty = nn.Parameter(torch.zeros(3, m))
                self.hidden = hidden

            def forward(self, x):
                h = torch.relu(self.first(x))
                out = []
                for k in range(3):
                    theta = self.second[k](h[:, k * self.hidden:(k + 1) * self.hidden])
                    out.append(theta @ self.discrimination[k].T - self.difficulty[k])
                return out   # logits of score, cost, std

        return Net()

    def _train(self, X, supervision, gen, **_):
        import torch

        mu_q, mu_c, sigma = (torch.from_numpy(t) for t in clipped_targets(supervision))
        mask = observed_mask(supervision)        # partial grid: losses over observed pairs only
        self.arch_ = {"d_in": int(X.shape[1]), "m": len(self.models_), "hidden": int(self.hidden),
                      "latent": int(self.latent_dim)}
        self.net_ = self._build(**self.arch_, gen=gen)
        inputs = Inputs(X, self.sparse_input_)
        opt = adam(self.net_.parameters(), self.lr, self.weight_decay)
        self.net_.train()
        per_epoch = -(-inputs.n // max(1, min(int(self.batch_size), inputs.n)))
        for _ in range(max(int(self.epochs), -(-int(self.min_steps) // per_epoch))):
            for idx in batches(inputs.n, self.batch_size, gen):
                s, c, d = self.net_(inputs.rows(idx.numpy()))
                mb = None if mask is None else mask[idx]
                loss = (bce_with_logits(s, mu_q[idx], mb)
                        + self.cost_loss_weight * mse(torch.sigmoid(c), mu_c[idx], mb)
                        + self.std_loss_weight * mse(torch.sigmoid(d), sigma[idx], mb))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def _predict(self, X, lam):
        import torch

        s, c, d = (clip01(torch.sigmoid(t).numpy().astype(np.float64))
                   for t in self.net_(Inputs(X, self.sparse_input_).rows()))
        return StatsPrediction(self.models_, s, c, d)
