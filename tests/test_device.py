"""--device auto|cpu|cuda: validation, CPU default, and the device-placement wrapper of the torch
routers (run here on CPU: it must leave results bit-for-bit unchanged)."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest

import caproute.routers._torch as T
from caproute.core.device import (
    DEVICE_ENV,
    cuda_available,
    requested_device,
    resolve_device,
    set_default_device,
)
from caproute.errors import ConfigError
from caproute.routers.base import get_router_class
from caproute.supervise.supervision import Supervision

TORCH_FAMILIES = ("mlp", "embedllm", "graphrouter", "mirt", "rmsoftmax", "mf")


def test_device_names_and_default(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert requested_device() == "cpu" and resolve_device() == "cpu"
    assert requested_device("CUDA:1") == "cuda:1"
    for bad in ("gpu", "cuda:x", "cpu:0", "tpu"):
        with pytest.raises(ConfigError, match="expected auto, cpu, cuda"):
            requested_device(bad)
    monkeypatch.setenv(DEVICE_ENV, "bogus")
    with pytest.raises(ConfigError, match=DEVICE_ENV):
        resolve_device()
    monkeypatch.setenv(DEVICE_ENV, "auto")
    assert resolve_device() == ("cuda" if cuda_available() else "cpu")


@pytest.mark.skipif(cuda_available(), reason="this machine has a CUDA device")
def test_cuda_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    with pytest.raises(ConfigError, match="torch sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ConfigError):
        set_default_device("cuda")
    res = subprocess.run([sys.executable, "-m", "caproute", "train", "--router", "knn", "--out", "unused",
                          "--device", "cuda"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no CUDA device" in res.stderr + res.stdout
    assert "Traceback" not in res.stderr


def test_set_default_device_exports_env(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    set_default_device(None)
    assert DEVICE_ENV not in __import__("os").environ
    set_default_device("auto")
    assert __import__("os").environ[DEVICE_ENV] == "auto"


def _data(n=48, m=4, d=24, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    sup = Supervision([f"q{i}" for i in range(n)], [f"m{j}" for j in range(m)], rng.random((n, m)),
                      rng.random((n, m)), rng.random((n, m)) * 0.3)
    return X, sup


@pytest.mark.parametrize("family", TORCH_FAMILIES)
def test_device_wrapper_is_transparent_on_cpu(family, monkeypatch):
    """The GPU code path (inputs created on the device, parameters moved in adam(), the torch
    function mode, the module moved back to CPU) run with device = CPU gives the CPU results."""
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    X, sup = _data()
    cls = get_router_class(family)
    ref = cls().fit(X, sup).predict_stats(X, lam=0.1)

    @contextmanager
    def forced(device):
        T._ACTIVE_DEVICE[0] = "cpu"
        try:
            with T._device_mode("cpu"):
                yield
        finally:
            T._ACTIVE_DEVICE[0] = None

    monkeypatch.setattr(T, "on_device", forced)
    got = cls().fit(X, sup).predict_stats(X, lam=0.1)
    for name in ("mu_q", "mu_c", "sigma_q"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=f"{family} {name}")


def test_router_device_attribute_is_not_a_hyper_parameter():
    r = get_router_class("mlp")()
    assert r.device is None and "device" not in r.get_params()


def test_device_mode_compares_with_the_device_tensors_report():
    """The mode must compare tensors with the device they report: torch.device('cuda') is not
    equal to cuda:0 (a GPU run crashed on mixed devices in mlp and embedllm), nor 'cpu:0' to cpu."""
    import torch

    for name in ("cpu", "cpu:0"):
        assert T.resolve_device(name) == torch.empty(0, device=name).device == torch.device("cpu")
        assert T._device_mode(name).device == torch.empty(0).device
    if torch.cuda.is_available():   # where there is a GPU (benchmarks/gpu_check.sh runs every family there)
        assert T._device_mode("cuda").device == torch.zeros(1, device="cuda").device
