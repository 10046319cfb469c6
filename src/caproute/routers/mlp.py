"""MLP regression router (DARS §A.10 "MLP", TensorOpera-style).

Three separate multi-output regressors, one output per model, for mu_q, mu_c and sigma_q, each a
``StandardScaler`` followed by scikit-learn's ``MLPRegressor(hidden_layer_sizes=(128, 64),
activation="relu", solver="adam", alpha=1e-4, learning_rate_init=1e-3, max_iter=800,
early_stopping=False)`` with seeds s, s + 991, s + 1991 (all FOUND, reference ``methods/mlp.py``).

We re-implement that regressor in torch because scikit-learn densifies 20k-dimensional TF-IDF
input and takes minutes per fit; the re-implementation keeps its semantics: Glorot-uniform
initialisation of weights and biases, squared loss ``mean((y - p)^2) / 2`` plus
``alpha / 2 * sum(W^2) / batch`` (on a partial grid the mean runs over the observed pairs only),
batches of min(200, n), Adam (beta 0.9/0.999, eps 1e-8), and
scikit-learn's convergence rule (stop once the epoch loss has not improved by ``tol = 1e-4`` for
more than ``n_iter_no_change = 10`` epochs; that rule applies even with early_stopping=False).
Differences: float32 instead of float64, the eps of Adam applied to the bias-corrected second
moment (torch) instead of the raw one; random streams differ. The standardisation is folded into
the first layer (``(x - mean) / scale @ W = (x / scale) @ W - (mean / scale) @ W``), which lets
sparse TF-IDF batches stay sparse. When every sigma_q target is 0 (single-shot supervision) the
third regressor is not trained and predicts 0, as in the reference.
Predictions are clipped to [0, 1].
"""

from __future__ import annotations

import math

import numpy as np

from caproute.routers._torch import (
    Inputs,
    TorchRouterMixin,
    adam,
    batches,
    make_input_linear,
    masked_mean,
    observed_mask,
)
from caproute.routers.base import Router, StatsPrediction, clip01, clipped_targets, register

SEED_OFFSETS = {"mu_q": 0, "mu_c": 991, "sigma_q": 1991}


def _glorot_(module_weight, fan_in: int, fan_out: int, gen) -> None:
    bound = math.sqrt(6.0 / (fan_in + fan_out))    # scikit-learn's init for relu networks
    module_weight.data.uniform_(-bound, bound, generator=gen)


def _build_regressor(d_in: int, hidden: list[int], d_out: int, gen):
    import torch
    from torch import nn

    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            dims = [d_in, *hidden, d_out]
            self.first = make_input_linear(d_in, dims[1], gen)
            self.rest = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[1:-1], dims[2:], strict=True))
            self.register_buffer("offset", torch.zeros(d_in))   # mean / scale of the scaler
            _glorot_(self.first.weight, dims[0], dims[1], gen)
            _glorot_(self.first.bias, dims[0], dims[1], gen)
            for layer, a, b in zip(self.rest, dims[1:-1], dims[2:], strict=True):
                _glorot_(layer.weight, a, b, gen)
                _glorot_(layer.bias, a, b, gen)

        def forward(self, x):
            h = torch.relu(self.first(x) - self.offset @ self.first.weight)
            for i, layer in enumerate(self.rest):
                h = layer(h)
                if i < len(self.rest) - 1:
                    h = torch.relu(h)
            return h

        def weights(self):
            return [self.first.weight, *(layer.weight for layer in self.rest)]

        def biases(self):
            return [self.first.bias, *(layer.bias for layer in self.rest)]

        def l2(self) -> float:
            with torch.no_grad():
                return float(sum(torch.dot(w.reshape(-1), w.reshape(-1)) for w in self.weights()))

    return Regressor()


@register
class MLPRouter(TorchRouterMixin, Router):
    name = "mlp"
    param_spec = {"hidden": ">= 1", "alpha": ">= 0", "lr": "> 0", "max_iter": ">= 1", "batch_size": ">= 1",
                  "tol": ">= 0", "n_iter_no_change": ">= 1"}
    beta_in_training = False

    def __init__(self, hidden: tuple[int, ...] = (128, 64), alpha: float = 1e-4, lr: float = 1e-3,
                 max_iter: int = 800, batch_size: int = 200, tol: float = 1e-4, n_iter_no_change: int = 10,
                 seed: int = 42):
        self.hidden = hidden
        self.alpha = alpha
        self.lr = lr
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.seed = seed

    def _build(self, d_in: int, m: int, heads: list[str], hidden: list[int], gen):
        from torch import nn

        return nn.ModuleDict({h: _build_regressor(d_in, hidden, m, gen) for h in heads})

    def _train(self, X, supervision, gen, **_):
        import torch

        from caproute.routers._torch import generator

        mean = X.astype(np.float64).mean(axis=0)
        std = X.astype(np.float64).std(axis=0)
        scale = np.where(std > 0, std, 1.0)       # StandardScaler: constant columns keep scale 1
        self.scale_ = scale.astype(np.float32)
        inputs = Inputs(X, self.sparse_input_, col_scale=1.0 / scale)
        targets = dict(zip(("mu_q", "mu_c", "sigma_q"), clipped_targets(supervision), strict=True))
        heads = ["mu_q", "mu_c"] + (["sigma_q"] if targets["sigma_q"].any() else [])
        mask = observed_mask(supervision)        # partial grid: squared loss over observed pairs only
        self.arch_ = {"d_in": int(X.shape[1]), "m": len(self.models_), "heads": heads,
                      "hidden": [int(h) for h in self.hidden]}
        self.n_iter_ = {}
        nets = {}
        for head in heads:
            g = generator(int(self.seed) + SEED_OFFSETS[head])
            net = _build_regressor(X.shape[1], self.arch_["hidden"], len(self.models_), g)
            with torch.no_grad():
                net.offset.copy_(torch.from_numpy((mean / scale).astype(np.float32)))
            self.n_iter_[head] = self._fit_one(net, inputs, torch.from_numpy(targets[head]), g, mask)
            nets[head] = net
        self.net_ = torch.nn.ModuleDict(nets)

    def _fit_one(self, net, inputs: Inputs, Y, gen, mask=None) -> int:
        n = inputs.n
        # The L2 penalty alpha/2 * sum(W^2) / batch enters as Adam's (coupled) weight decay
        # alpha / batch on the weights: the same gradient, without a second pass in autograd.
        opt = adam([{"params": net.weights(), "weight_decay": 0.0},
                    {"params": net.biases(), "weight_decay": 0.0}], self.lr)
        full = min(int(self.batch_size), n) >= n
        x_all = inputs.rows() if full else None
        best, no_improve = math.inf, 0
        for epoch in range(int(self.max_iter)):
            total = 0.0
            for idx in ([None] if full else batches(n, self.batch_size, gen)):
                xb, yb = (x_all, Y) if idx is None else (inputs.rows(idx.numpy()), Y[idx])
                nb = yb.shape[0]
                opt.param_groups[0]["weight_decay"] = self.alpha / nb
                if mask is None:
                    data_loss = 0.5 * ((net(xb) - yb) ** 2).mean()
                else:
                    mb = mask if idx is None else mask[idx]
                    data_loss = 0.5 * masked_mean((net(xb) - yb) ** 2, mb)
                penalty = 0.5 * self.alpha * net.l2() / nb     # value of the penalty before the step
                opt.zero_grad(set_to_none=True)
                data_loss.backward()
                opt.step()
                total += (float(data_loss.detach()) + penalty) * nb
            epoch_loss = total / n
            no_improve = no_improve + 1 if epoch_loss > best - self.tol else 0
            best = min(best, epoch_loss)
            if no_improve > self.n_iter_no_change:
                return epoch + 1
        return int(self.max_iter)

    def _predict(self, X, lam):
        inputs = Inputs(X, self.sparse_input_, col_scale=1.0 / self.scale_.astype(np.float64))
        x = inputs.rows()
        out = {h: clip01(self.net_[h](x).numpy().astype(np.float64)) for h in self.arch_["heads"]}
        sigma = out.get("sigma_q", np.zeros_like(out["mu_q"]))
        return StatsPrediction(self.models_, out["mu_q"], out["mu_c"], sigma)

    def _extra_state(self):
        return {"scale": self.scale_}

    def _load_extra(self, arrays):
        self.scale_ = arrays["scale"].astype(np.float32)
