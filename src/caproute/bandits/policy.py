"""The dueling-policy contract (river-style online verbs) shared by FGTS.CDB and the baselines.

- ``__init__`` stores hyper-parameters (the action set ``arms`` (K, d) and ``models`` among them)
  and starts an empty learned state (attributes ending in ``_``).
- ``select(x) -> (i, j)``: the two arms to duel for query embedding x (d,); they may coincide.
- ``update(x, i, j, y)``: learn from feedback y = +1 (arm i preferred) or -1 (arm j preferred).
- ``save(dir)`` / ``DuelingPolicy.load(dir)``: no pickle. Arrays go to ``state.safetensors``,
  everything else (hyper-parameters, step counter, random-generator state) to ``config.json``
  with a format version and the SHA-256 of the array file, checked on load. A restored policy
  continues exactly where the saved one stopped (same random stream). A save is one atomic
  checkpoint (a crash at any instant leaves the previous or the new policy, never a mix);
  ``checkpoint_`` holds JSON metadata a server stores with it (e.g. the last feedback applied).
- Thread safety: ``select`` and ``update`` hold one re-entrant lock, so concurrent calls from
  server threads are serialised and no update is lost.
- ``embed(texts)``: query embeddings with the policy's sentence encoder (``encoder`` = a
  sentence-transformers directory, e.g. a CCFT fine-tuned MiniLM), loaded lazily on first use.
"""

from __future__ import annotations

import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from caproute.core import artifact
from caproute.core.params import HyperParams, add_named, get_named
from caproute.errors import ConfigError

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
STATE_FILE = "state.safetensors"
CONFIG_NEXT = "config.next.json"       # an interrupted save's pending pair (see DuelingPolicy.save)
STATE_NEXT = "state.next.safetensors"
ENCODER_DIR = "encoder"
CHECKPOINT_FILES = (CONFIG_FILE, STATE_FILE, CONFIG_NEXT, STATE_NEXT)

POLICIES: dict[str, type[DuelingPolicy]] = {}


def register_policy(cls: type[DuelingPolicy]) -> type[DuelingPolicy]:
    """Class decorator: make a policy available by its ``name``."""
    return add_named(POLICIES, cls)


def get_policy_class(name: str) -> type[DuelingPolicy]:
    import caproute.bandits.baselines  # noqa: F401  (registers the baselines)
    import caproute.bandits.fgts  # noqa: F401

    return get_named(POLICIES, name, "policy")


class DuelingPolicy(HyperParams, ABC):
    name: ClassVar[str] = ""
    #: parameters stored as arrays (in state.safetensors), not in config.json
    array_params: ClassVar[tuple[str, ...]] = ("arms",)

    def __init__(self, arms: np.ndarray, models: Sequence[str] | None = None, *, seed: int = 0,
                 encoder: str | None = None):
        self.arms = arms
        self.models = models
        self.seed = seed
        self.encoder = encoder
        self.reset()

    # -- hyper-parameters: get_params / set_params from core.params.HyperParams ------------------
    def __repr__(self) -> str:
        k, d = self.arms_.shape
        return f"{type(self).__name__}(K={k}, d={d}, t={self.t_})"

    # -- state ------------------------------------------------------------------------------------
    def reset(self) -> DuelingPolicy:
        """Forget everything learned; restart the random stream from ``seed``."""
        arms = np.asarray(self.arms, dtype=np.float64)
        if arms.ndim != 2 or arms.shape[0] < 1:
            raise ConfigError(f"arms must be a (K, d) array with K >= 1, got shape {arms.shape}")
        if not np.all(np.isfinite(arms)):
            raise ConfigError("arms contain NaN or infinite values")
        self.arms_ = arms
        models = tuple(str(m) for m in self.models) if self.models is not None else tuple(
            f"arm-{k}" for k in range(arms.shape[0]))
        if len(models) != arms.shape[0]:
            raise ConfigError(f"{len(models)} model names for {arms.shape[0]} arms")
        self.models_ = models
        self.rng_ = np.random.default_rng(self.seed)
        self.t_ = 0
        #: True: a duel may pair a model with itself (the paper's FGTS.CDB, every experiment); a
        #: servable policy (``caproute duel init``) pairs two different models unless --allow-same
        self.allow_same_ = True
        self._lock = threading.RLock()
        self._encoder_model = None
        self.checkpoint_: dict[str, Any] = {}
        self._reset_state()
        return self

    @property
    def n_arms(self) -> int:
        return self.arms_.shape[0]

    @property
    def dim(self) -> int:
        return self.arms_.shape[1]

    @abstractmethod
    def _reset_state(self) -> None:
        """Create the empty learned state."""

    @abstractmethod
    def _select(self, x: np.ndarray) -> tuple[int, int]:
        ...

    @abstractmethod
    def _update(self, x: np.ndarray, i: int, j: int, y: float) -> None:
        ...

    def _check_x(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.size != self.dim:
            raise ValueError(f"query embedding has {x.size} dims, the policy expects {self.dim}")
        return x

    # -- online verbs -----------------------------------------------------------------------------
    def select(self, x: np.ndarray, distinct: bool | None = None) -> tuple[int, int]:
        """The pair of arm indices (i, j) to duel on query embedding x (d,).

        ``distinct`` (default: ``not allow_same_``): when the policy draws the same arm twice, the
        second becomes another arm (:meth:`_other_arm`), so the duel compares two models."""
        x = self._check_x(x)
        distinct = (not self.allow_same_) if distinct is None else distinct
        with self._lock:
            i, j = self._select(x)
            if distinct and i == j and self.n_arms > 1:
                j = self._other_arm(x, int(i))
        return int(i), int(j)

    def _other_arm(self, x: np.ndarray, i: int) -> int:
        """A second arm different from ``i`` (uniform over the others; FGTS.CDB: its second
        posterior sample's best other arm)."""
        k = int(self.rng_.integers(self.n_arms - 1))
        return k + (k >= i)

    def update(self, x: np.ndarray, i: int, j: int, y: int) -> None:
        """Learn from a duel: y = +1 if arm i's answer was preferred, -1 if arm j's was."""
        x = self._check_x(x)
        i, j = int(i), int(j)
        if not (0 <= i < self.n_arms and 0 <= j < self.n_arms):
            raise ValueError(f"arm indices ({i}, {j}) out of range 0..{self.n_arms - 1}")
        if y not in (1, -1):
            raise ValueError(f"feedback y must be +1 or -1, got {y!r}")
        with self._lock:
            self._update(x, i, j, float(y))
            self.t_ += 1

    def select_models(self, x: np.ndarray) -> tuple[str, str]:
        """:meth:`select`, returning model names."""
        i, j = self.select(x)
        return self.models_[i], self.models_[j]

    def model_index(self, model: str) -> int:
        try:
            return self.models_.index(model)
        except ValueError:
            raise ConfigError(f"unknown model '{model}' (policy arms: {', '.join(self.models_)})") from None

    # -- text encoder -----------------------------------------------------------------------------
    def embed(self, texts: str | Sequence[str]) -> np.ndarray:
        """L2-normalised query embeddings with the policy's encoder: (d,) for one text, (n, d) for a list."""
        from caproute.bandits.encoder import TextEncoder

        if self.encoder is None:
            raise ConfigError("this policy has no encoder; pass encoder=<sentence-transformers dir>")
        with self._lock:
            if self._encoder_model is None:
                self._encoder_model = TextEncoder(self.encoder)
            enc = self._encoder_model
        one = isinstance(texts, str)
        out = enc.encode([texts] if one else list(texts))
        if out.shape[1] != self.dim:
            raise ConfigError(f"encoder {self.encoder} gives {out.shape[1]}-dim embeddings, "
                              f"the policy expects {self.dim}")
        return out[0] if one else out

    # -- persistence ------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Learned arrays and JSON-able learned metadata (subclasses extend)."""
        return {}, {}

    def _load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`_state` wrote (nothing for stateless policies)."""
        return None

    def save(self, path: str | Path, *, copy_encoder: bool = False) -> Path:
        """Write the policy to directory ``path`` as one atomic checkpoint.

        ``copy_encoder``: also copy the encoder directory into ``path/encoder`` so the saved policy
        is self-contained. An encoder inside ``path`` is stored relative to it (the directory can be
        moved), any other encoder as an absolute path, so load -> save -> load round-trips.

        Crash safety (a ``kill -9`` at any instant leaves a loadable policy): the arrays and the
        config are first written whole to ``state.next.safetensors`` / ``config.next.json``, then
        renamed over ``state.safetensors`` and ``config.json``, config last. :meth:`load` takes the
        newest consistent pair (checked by the SHA-256 in the config), rolling forward over an
        interrupted rename.
        """
        from safetensors.numpy import save as save_bytes

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with self._lock:
            arrays, meta = self._state()
            # optional array parameters (e.g. FGTS.CDB's warm-start prior) are stored when set
            extra = {p: np.asarray(getattr(self, p), dtype=np.float64) for p in self.array_params
                     if p != "arms" and getattr(self, p) is not None}
            arrays = {"arms": self.arms_, **extra, **arrays}
            arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
            blob = save_bytes(arrays)
            params = {k: v for k, v in self.get_params().items() if k not in self.array_params}
            params["models"] = list(self.models_)
            encoder = params.get("encoder")
            dest = path / ENCODER_DIR
            if encoder is not None and not copy_encoder and _owned_by_other_policy(encoder, path):
                # an online checkpoint of a servable policy stays self-contained: its encoder is
                # copied once (staged), never referenced inside the initial policy's folder
                if not dest.is_dir():
                    from caproute.core.atomic import staged_dir

                    with staged_dir(dest) as tmp:
                        shutil.copytree(encoder, tmp, dirs_exist_ok=True)
                params["encoder"] = ENCODER_DIR
            elif copy_encoder and encoder is not None:
                if Path(encoder).resolve() != dest.resolve():
                    if dest.exists():
                        shutil.rmtree(dest)
                    shutil.copytree(encoder, dest)
                params["encoder"] = ENCODER_DIR
            elif encoder is not None:
                params["encoder"] = _encoder_ref(encoder, path)
            config = {"policy": self.name, "params": params, "t": self.t_, "allow_same": bool(self.allow_same_),
                      "rng": self.rng_.bit_generator.state, "meta": meta, "checkpoint": dict(self.checkpoint_)}
            # the lock also serialises concurrent saves, which share the .next file names
            artifact.write_checkpoint(path, config, blob, version=FORMAT_VERSION, files=CHECKPOINT_FILES)
        return path

    @classmethod
    def load(cls, path: str | Path) -> DuelingPolicy:
        from safetensors.numpy import load as load_bytes

        path = Path(path)
        config, blob, cfg_file = _read_checkpoint(path)
        artifact.check_version(config, cfg_file, FORMAT_VERSION)
        name = config.get("policy")
        klass = get_policy_class(name) if cls is DuelingPolicy else cls
        if klass.name != name:
            raise ConfigError(f"{cfg_file}: holds a '{name}' policy, not '{klass.name}'")
        arrays = load_bytes(blob)
        params = dict(config["params"])
        enc = params.get("encoder")
        if enc is not None and not Path(enc).is_absolute():
            params["encoder"] = str((path / enc).resolve())
        for p in klass.array_params:
            params[p] = arrays.pop(p) if p == "arms" else arrays.pop(p, None)
        try:
            policy = klass(**params)
        except TypeError as e:
            raise ConfigError(f"{cfg_file}: parameters do not fit {klass.__name__}: {e}") from None
        policy.t_ = int(config["t"])
        policy.allow_same_ = bool(config.get("allow_same", True))
        policy.rng_.bit_generator.state = config["rng"]
        policy.checkpoint_ = dict(config.get("checkpoint") or {})
        policy._load_state(arrays, config.get("meta", {}))
        return policy


def _owned_by_other_policy(encoder: str | Path, saved_in: Path) -> bool:
    """True for the ``encoder/`` folder of another policy directory (one with a config.json)."""
    enc = Path(encoder).resolve()
    return (enc.name == ENCODER_DIR and (enc.parent / "config.json").exists()
            and enc.parent != saved_in.resolve())


def _encoder_ref(encoder: str | Path, saved_in: Path) -> str:
    """The encoder path as stored in ``saved_in/config.json``: relative when inside it, else absolute."""
    enc = Path(encoder).resolve()
    try:
        return enc.relative_to(saved_in.resolve()).as_posix()
    except ValueError:
        return str(enc)


def _read_checkpoint(path: Path) -> tuple[dict, bytes, Path]:
    """The newest consistent (config, state bytes) of a policy directory (an interrupted save
    rolls forward; see :func:`caproute.core.artifact.read_checkpoint`)."""
    return artifact.read_checkpoint(path, what="policy", files=CHECKPOINT_FILES)
