"""Shared plumbing for the torch routers: threads, seeded generators, sparse-aware input layers,
and saving a module's weights through the safetensors-based Router persistence.

CPU by default; ``device`` (``auto`` | ``cpu`` | ``cuda``, see :mod:`caproute.core.device`) trains on a
GPU: see :func:`on_device`. Every random draw (initialisation, shuffling, noise) comes from a ``torch.Generator``
seeded from the router's ``seed``, never from the global RNG, so a fit is reproducible and does
not disturb the caller's random state. Fits run with ``CAPROUTE_TORCH_THREADS`` threads (default
1): on the small networks here one thread is fastest, and a fixed count keeps results identical.

TF-IDF features are 99% zeros; a first layer that multiplies a sparse CSR batch instead of a
dense one computes the same function (up to float rounding) many times faster, so routers take
the sparse path when the training features are sparse (see :func:`use_sparse`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

SPARSE_MAX_DENSITY = 0.1
SPARSE_MIN_DIM = 512


def use_sparse(X: np.ndarray) -> bool:
    """Take the sparse path for wide, mostly-zero features (TF-IDF), the dense one otherwise."""
    return X.shape[1] >= SPARSE_MIN_DIM and np.count_nonzero(X) <= SPARSE_MAX_DENSITY * X.size


@contextmanager
def torch_threads(n: int | None = None) -> Iterator:
    import torch

    n = int(n or os.environ.get("CAPROUTE_TORCH_THREADS", "1"))
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield torch
    finally:
        if old != n:
            torch.set_num_threads(old)


def generator(seed: int):
    import torch

    return torch.Generator().manual_seed(int(seed))


class SparseBatch:
    """A scipy CSR batch of query features (the sparse path); see :func:`input_matmul`."""

    def __init__(self, csr):
        self.csr = csr
        self.shape = csr.shape
        self._t = None
        self._torch = None

    @property
    def t(self):
        """The transpose as CSR, built once per batch: ``t @ g`` sums in the same order as
        ``csr.T @ g`` (a CSC product), bit for bit, and is several times faster."""
        if self._t is None:
            self._t = self.csr.T.tocsr()
        return self._t

    def matmul(self, weight):
        """``csr @ weight`` for a dense torch weight, as a torch tensor (torch's CSR kernel: the same
        per-row summation order as scipy's, faster)."""
        import torch

        if self._torch is None:
            import warnings

            c = self.csr
            with warnings.catch_warnings():    # "sparse CSR support is in beta state"
                warnings.simplefilter("ignore", UserWarning)
                self._torch = torch.sparse_csr_tensor(
                    torch.from_numpy(c.indptr.astype(np.int64)), torch.from_numpy(c.indices.astype(np.int64)),
                    torch.from_numpy(np.asarray(c.data, np.float32)), size=c.shape, check_invariants=False)
        return self._torch @ weight


class Inputs:
    """Query features for training/prediction: a dense tensor, or scipy CSR rows (sparse path).

    ``rows(idx)`` returns the batch as a dense float32 tensor or a :class:`SparseBatch`; layers
    built by :func:`make_input_linear` accept both.
    """

    def __init__(self, X: np.ndarray, sparse: bool, col_scale: np.ndarray | None = None):
        import torch

        X = np.asarray(X, np.float32)
        if col_scale is not None:
            X = X * col_scale[None, :].astype(np.float32)
        self.n, self.d = X.shape
        device = _ACTIVE_DEVICE[0]
        self.sparse = sparse and device is None     # on a GPU a dense matmul is the fast path
        if device is not None:
            self._dense = torch.from_numpy(np.ascontiguousarray(X)).to(device)
            return
        if sparse:
            import scipy.sparse as sp

            self._csr = sp.csr_matrix(X)
            self._dense = None
            self._all = SparseBatch(self._csr)     # one object: its transpose is built once per fit
        else:
            self._dense = torch.from_numpy(np.ascontiguousarray(X))

    def rows(self, idx=None):
        if not self.sparse:
            return self._dense if idx is None else self._dense[idx]
        return self._all if idx is None else SparseBatch(self._csr[np.asarray(idx)])


def _spmm_function():
    import torch

    class SpMM(torch.autograd.Function):
        """x @ W for a scipy CSR x and a dense weight W; the gradient x^T @ g also stays in scipy
        (several times faster than torch's CSR backward on CPU)."""

        @staticmethod
        def forward(ctx, weight, batch):
            ctx.batch = batch
            return batch.matmul(weight.detach())

        @staticmethod
        def backward(ctx, grad):
            g = np.asarray(ctx.batch.t @ grad.detach().numpy(), dtype=np.float32)
            return torch.from_numpy(g), None

    return SpMM


_SPMM = None


def input_matmul(x, weight):
    """``x @ weight`` for a dense tensor or a :class:`SparseBatch` x."""
    global _SPMM
    if isinstance(x, SparseBatch):
        if _SPMM is None:
            _SPMM = _spmm_function()
        return _SPMM.apply(weight, x)
    return x @ weight


def make_input_linear(d_in: int, d_out: int, gen):
    """A Linear layer on (possibly sparse) inputs: weight stored (d_in, d_out), forward ``x @ W + b``.

    Initialised like ``torch.nn.Linear``: U(-1/sqrt(d_in), 1/sqrt(d_in)) for weight and bias.
    """
    import torch
    from torch import nn

    class InputLinear(nn.Module):
        def __init__(self):
            super().__init__()
            bound = 1.0 / math.sqrt(d_in)
            self.weight = nn.Parameter(torch.empty(d_in, d_out).uniform_(-bound, bound, generator=gen))
            self.bias = nn.Parameter(torch.empty(d_out).uniform_(-bound, bound, generator=gen))

        def forward(self, x):
            return input_matmul(x, self.weight) + self.bias

    return InputLinear()


def linear(d_in: int, d_out: int, gen, bias: bool = True):
    """``torch.nn.Linear`` with its default initialisation drawn from ``gen``."""
    import torch
    from torch import nn

    layer = nn.Linear(d_in, d_out, bias=bias)
    bound = 1.0 / math.sqrt(d_in)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=gen)
        if bias:
            layer.bias.uniform_(-bound, bound, generator=gen)
    return layer


def adam(params, lr: float, weight_decay: float = 0.0):
    """torch Adam; the fused CPU kernel when available (same algorithm, fewer memory passes).
    ``params``: parameters or parameter groups. Under :func:`on_device` the parameters (built and
    initialised on CPU, so the initial weights are the CPU run's) move to the device here."""
    import torch

    params = list(params)
    if _ACTIVE_DEVICE[0] is not None:
        _move_params(params, _ACTIVE_DEVICE[0])
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def batches(n: int, batch_size: int, gen) -> Iterator:
    """Shuffled index batches for one epoch (``torch.randperm`` from ``gen``)."""
    import torch

    perm = torch.randperm(n, generator=gen)
    bs = max(1, min(int(batch_size), n))
    for start in range(0, n, bs):
        yield perm[start:start + bs]


def module_state(module, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_module_state(module, arrays: dict[str, np.ndarray], prefix: str = "") -> None:
    import torch

    sd = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}
    module.load_state_dict(sd, strict=True)


# -- device placement -------------------------------------------------------------------------------
#: the device of the fit in progress (None: CPU, the code paths above unchanged)
_ACTIVE_DEVICE: list = [None]


def _move_params(params, device) -> None:
    import torch

    with torch._C.DisableTorchFunction():
        for item in params:
            group = item["params"] if isinstance(item, dict) else [item]
            for p in group:
                p.data = p.data.to(device)


def resolve_device(device):
    """The ``torch.device`` that tensors created on ``device`` report: ``"cuda"`` resolves to
    ``cuda:0`` (the current one), ``"cpu:0"`` to ``cpu``. Compare tensors' devices with this, never
    with ``torch.device(device)``: ``torch.device("cuda") != torch.device("cuda", 0)``."""
    import torch

    return torch.empty(0, device=device).device


def _device_mode(device):
    """A torch function mode that lets family code written for CPU run with parameters and
    inputs on ``device``: an op mixing tensors on ``device`` with CPU tensors (targets, noise drawn
    from the seeded CPU generator, buffers) gets the CPU ones moved; ``Tensor.numpy()`` copies to
    CPU first. Ops on CPU tensors only (seeded draws, index shuffles) stay on CPU, so every random
    draw is the CPU run's."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_flatten, tree_map

    dev = resolve_device(device)
    passthrough = {"__set__", "__get__", "copy_", "to", "cpu", "cuda", "numpy"}

    class OnDevice(TorchFunctionMode):
        device = dev

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            if name == "numpy":
                return args[0].detach().cpu().numpy()
            if name not in passthrough and "generator" not in kwargs:
                leaves, _ = tree_flatten((args, kwargs))
                if any(isinstance(t, torch.Tensor) and t.device == dev for t in leaves):
                    def move(t):
                        return t.to(dev) if isinstance(t, torch.Tensor) and t.device != dev else t
                    args, kwargs = tree_map(move, args), tree_map(move, kwargs)
            return func(*args, **kwargs)

    return OnDevice()


@contextmanager
def on_device(device: str | None):
    """Run a fit on ``device`` (``cuda``...; ``None`` or ``cpu``: nothing changes). Inputs are
    created there, parameters move there in :func:`adam`, and :func:`_device_mode` reconciles the
    family code's CPU tensors. The caller moves the trained module back to CPU."""
    if device is None or device == "cpu":
        yield
        return
    _ACTIVE_DEVICE[0] = device
    try:
        with _device_mode(device):
            yield
    finally:
        _ACTIVE_DEVICE[0] = None


class TorchRouterMixin:
    """fit / predict_stats / persistence for routers holding one torch module ``net_``.

    Subclasses implement ``_build(**arch)`` (a fresh module from JSON-able architecture
    arguments), ``_train(inputs, supervision, gen, **fit_kw)`` (sets ``arch_`` and ``net_``) and
    ``_predict(inputs, lam) -> StatsPrediction``; optional extra arrays via ``_extra_state`` /
    ``_load_extra``.
    """

    #: training device (``auto`` | ``cpu`` | ``cuda``; None: ``$CAPROUTE_DEVICE``, else CPU). Not a
    #: hyper-parameter: it is not saved, and predictions run on CPU.
    device: str | None = None

    def fit(self, X, supervision, **fit_kw):
        from caproute.core.device import resolve_device

        X = self._validate_fit(X, supervision)
        self.sparse_input_ = use_sparse(X)
        dev = resolve_device(self.device)
        with torch_threads(), on_device(dev):
            self._train(X, supervision, generator(self.seed), **fit_kw)
        if dev != "cpu":
            self.net_.to("cpu")
            _move_params(self.net_.parameters(), "cpu")
        self.net_.eval()
        return self

    def predict_stats(self, X, lam: float | None = None):
        X = self._validate_X(X)
        with torch_threads() as torch, torch.no_grad():
            return self._predict(X, lam)

    def _extra_state(self) -> dict[str, np.ndarray]:
        return {}

    def _load_extra(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    def _state(self):
        arrays = module_state(self.net_, "net.")
        arrays.update({f"extra.{k}": v for k, v in self._extra_state().items()})
        return arrays, {"arch": self.arch_, "sparse_input": bool(self.sparse_input_)}

    def _load_state(self, arrays, meta) -> None:
        self.arch_ = dict(meta["arch"])
        self.sparse_input_ = bool(meta.get("sparse_input", False))
        with torch_threads():
            self.net_ = self._build(**self.arch_, gen=generator(0))
            load_module_state(self.net_, arrays, "net.")
        self.net_.eval()
        self._load_extra({k[len("extra."):]: v for k, v in arrays.items() if k.startswith("extra.")})


# -- partial grids: losses over the observed (query, model) pairs -----------------------------------
def observed_mask(supervision):
    """The supervision's observed-pair mask as a float32 tensor (n, m), or None for a full grid
    (the unmasked losses then run exactly as before)."""
    import torch

    mask = getattr(supervision, "observed", None)
    return None if mask is None else torch.from_numpy(np.asarray(mask, np.float32))


def masked_mean(values, mask):
    """Mean of ``values`` (n, m) or (n, m, k) over the entries whose (query, model) ``mask`` (n, m)
    is 1; ``values.mean()`` when ``mask`` is None. A batch without observed entries gives 0."""
    if mask is None:
        return values.mean()
    w = mask if mask.dim() == values.dim() else mask.unsqueeze(-1).expand_as(values)
    return (values * w).sum() / w.sum().clamp_min(1.0)


def mse(pred, target, mask=None):
    """Mean squared error over observed pairs (``F.mse_loss`` on a full grid)."""
    import torch.nn.functional as F

    if mask is None:
        return F.mse_loss(pred, target)
    return masked_mean((pred - target) ** 2, mask)


def bce_with_logits(logits, target, mask=None):
    """Binary cross-entropy with logits over observed pairs (the unreduced mean on a full grid)."""
    import torch.nn.functional as F

    if mask is None:
        return F.binary_cross_entropy_with_logits(logits, target)
    return masked_mean(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), mask)
