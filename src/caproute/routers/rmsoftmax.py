"""RM-Softmax router (DARS §A.10, after Tsiourvas et al. §E.6): lambda is an input.

Input [x ; lambda']; MLP(256, 256) with ReLU -> one logit per model. Training rows are every
training query at each lambda' of linspace(0, lambda_max, 11) (reference: lambda_max =
max(0.10, lambda); ``train_pipeline`` passes that), with utilities
U = (mu_q - beta * sigma_q) - lambda' * mu_c (beta = the supervision's beta). Loss "softmax":
mean_i sum_m softmax(logits_i / T)_m * (max_m' U_im' - U_im), T = 1.0 (expected regret); the
alternative ``loss="classification"`` is cross-entropy on argmax U. On a partial grid each row's
softmax, argmax and regret run over the query's observed models only. Adam lr 1e-3, 20 epochs,
batches of 256 rows. All values FOUND (reference ``methods/rm_softmax.py``).

The router predicts a policy, not capability statistics: ``predict_stats(X, lam)`` returns
``kind="policy"`` with the probabilities pi(m | x, lam) in ``mu_q`` and zeros in ``mu_c`` and
``sigma_q``, so routing takes argmax pi at the given lambda. beta is fixed at training time.
"""

from __future__ import annotations

import numpy as np

from caproute.routers._torch import Inputs, TorchRouterMixin, adam, batches
from caproute.routers.base import Router, StatsPrediction, clipped_targets, register
from caproute.routers.embedllm import supervision_beta
from caproute.supervise.utility import DEFAULT_LAMBDA, observation_utility, utility

LOSSES = ("softmax", "classification")


def lambda_grid(lambda_max: float, num: int) -> np.ndarray:
    return np.linspace(0.0, float(lambda_max), int(num), dtype=np.float32)


def augmented_utilities(perf: np.ndarray, cost: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """U for every (lambda', query): (L * n, m); row r is query r % n at lambda' index r // n."""
    u = observation_utility(perf[None, :, :], cost[None, :, :], lambdas[:, None, None], dtype=np.float32)
    return u.reshape(-1, perf.shape[1]).astype(np.float32)


@register
class RMSoftmaxRouter(TorchRouterMixin, Router):
    name = "rmsoftmax"
    param_spec = {"hidden": ">= 1", "epochs": ">= 1", "batch_size": ">= 1", "lr": "> 0", "temperature": "> 0",
                  "lambda_max": ">= 0", "num_lambdas": ">= 1"}
    lambda_aware = True

    def __init__(self, hidden: tuple[int, ...] = (256, 256), epochs: int = 20, batch_size: int = 256,
                 lr: float = 1e-3, temperature: float = 1.0, lambda_max: float = 0.10, num_lambdas: int = 11,
                 loss: str = "softmax", seed: int = 42):
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.temperature = temperature
        self.lambda_max = lambda_max
        self.num_lambdas = num_lambdas
        self.loss = loss
        self.seed = seed

    def _build(self, d_in: int, m: int, hidden: list[int], gen):
        import torch
        from torch import nn

        from caproute.routers._torch import input_matmul, linear

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                # first layer on [x ; lambda'] as nn.Linear(D + 1, h) would be initialised, kept as
                # two parameters (x part, sparse-aware; lambda' column) so no slice is needed
                bound = 1.0 / float(np.sqrt(d_in + 1))
                h0 = hidden[0]
                self.w_x = nn.Parameter(torch.empty(d_in, h0).uniform_(-bound, bound, generator=gen))
                self.w_lam = nn.Parameter(torch.empty(h0).uniform_(-bound, bound, generator=gen))
                self.b = nn.Parameter(torch.empty(h0).uniform_(-bound, bound, generator=gen))
                dims = [*hidden, m]
                self.rest = nn.ModuleList(linear(a, b, gen) for a, b in zip(dims[:-1], dims[1:], strict=True))

            def forward(self, x, lam, rows=None):
                """``rows``: which row of x @ w_x each output row uses (training batches repeat
                queries across lambda', so x holds each training query once)."""
                xw = input_matmul(x, self.w_x)
                if rows is not None:
                    xw = xw[rows]
                h = xw + lam[:, None] * self.w_lam + self.b
                for layer in self.rest:
                    h = layer(torch.relu(h))
                return h

        return Net()

    def _train(self, X, supervision, gen, **_):
        import torch
        import torch.nn.functional as F

        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}")
        mu_q, mu_c, sigma = clipped_targets(supervision)
        # the risk-adjusted quality of each pair: U at lambda = 0 (the cost enters through lambda')
        perf = utility(mu_q, mu_c, sigma, lam=0.0, beta=supervision_beta(supervision), dtype=np.asarray(mu_q).dtype)
        lambdas = lambda_grid(self.lambda_max, self.num_lambdas)
        util = torch.from_numpy(augmented_utilities(perf, mu_c, lambdas))
        n = X.shape[0]
        observed = getattr(supervision, "observed", None)
        # partial grid: each row's softmax, argmax and regret run over its observed models only
        # (an unobserved model's logit is -inf in training, so its prior utility never enters)
        mask = None if observed is None else torch.from_numpy(np.tile(np.asarray(observed, bool), (len(lambdas), 1)))
        if mask is not None:
            util = util.masked_fill(~mask, float("-inf"))
        labels = util.argmax(dim=1)
        regret = util.max(dim=1, keepdim=True).values - util
        if mask is not None:
            regret = regret.masked_fill(~mask, 0.0)
        lam_col = torch.from_numpy(np.repeat(lambdas, n))
        self.arch_ = {"d_in": int(X.shape[1]), "m": len(self.models_), "hidden": [int(h) for h in self.hidden]}
        self.net_ = self._build(**self.arch_, gen=gen)
        x_all = Inputs(X, self.sparse_input_).rows()
        opt = adam(self.net_.parameters(), self.lr)
        self.net_.train()
        for _ in range(int(self.epochs)):
            for idx in batches(util.shape[0], self.batch_size, gen):
                logits = self.net_(x_all, lam_col[idx], rows=idx % n)
                if mask is not None:
                    logits = logits.masked_fill(~mask[idx], float("-inf"))
                if self.loss == "classification":
                    loss = F.cross_entropy(logits, labels[idx])
                else:
                    probs = torch.softmax(logits / self.temperature, dim=1)
                    loss = (probs * regret[idx]).sum(dim=1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def _predict(self, X, lam):
        import torch

        lam = DEFAULT_LAMBDA if lam is None else float(lam)
        lam_col = torch.full((X.shape[0],), lam, dtype=torch.float32)
        logits = self.net_(Inputs(X, self.sparse_input_).rows(), lam_col)
        probs = torch.softmax(logits, dim=1).numpy().astype(np.float64)
        zeros = np.zeros_like(probs)
        return StatsPrediction(self.models_, probs, zeros, zeros.copy(), kind="policy")
