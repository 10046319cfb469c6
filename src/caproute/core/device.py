"""Which torch device the torch routers, MiniLM encoding and CCFT fine-tuning run on.

One mechanism for all of them: an explicit ``device`` argument wins; otherwise the environment
variable ``CAPROUTE_DEVICE`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``; the CLI's ``--device``
sets it, so worker processes inherit it); otherwise ``cpu``. CPU is the default everywhere (tests,
CI, results on CPU are unchanged); ``auto`` picks CUDA when torch sees a CUDA device.
Nothing here imports torch unless a non-CPU device has to be checked.
"""

from __future__ import annotations

import os

from caproute.errors import ConfigError

DEVICE_ENV = "CAPROUTE_DEVICE"
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def requested_device(device: str | None = None) -> str:
    """The device asked for (argument, else $CAPROUTE_DEVICE, else ``cpu``), validated, unresolved."""
    name = (device or os.environ.get(DEVICE_ENV) or "cpu").strip().lower()
    base = name.split(":", 1)[0]
    if base not in DEVICE_CHOICES or (":" in name and (base != "cuda" or not name.split(":", 1)[1].isdigit())):
        source = "device" if device else DEVICE_ENV
        raise ConfigError(f"{source} '{name}': expected auto, cpu, cuda or cuda:N")
    return name


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str | None = None) -> str:
    """``cpu`` or ``cuda[:N]``: ``auto`` becomes ``cuda`` when torch sees a CUDA device, else ``cpu``.

    Asking for ``cuda`` on a machine where torch sees none is a :class:`ConfigError` (never a
    silent fall-back: a user who asks for the GPU wants to know it is not used).
    """
    name = requested_device(device)
    if name == "cpu":
        return "cpu"
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if not cuda_available():
        raise ConfigError(f"device '{name}' requested but torch sees no CUDA device "
                          "(use --device cpu or auto)")
    return name


def set_default_device(device: str | None) -> None:
    """Make ``device`` the process-wide default (and for child processes), after validating it."""
    if device is None:
        return
    resolve_device(device)   # fail early on `cuda` without a GPU
    os.environ[DEVICE_ENV] = requested_device(device)
