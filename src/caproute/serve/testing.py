"""Helpers to run the proxy (or a backend) for real in tests and benchmarks: a uvicorn server on a
free loopback port in a background thread, and pool YAML / router fixtures."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UvicornThread:
    """``with UvicornThread(app) as srv: srv.base_url`` -- a real HTTP server on 127.0.0.1."""

    def __init__(self, app, port: int | None = None, *, drain_timeout_s: float = 10.0, client_limits=None, **kw):
        """``client_limits``: a :class:`~caproute.serve.slow_clients.ClientLimits` to serve under."""
        import uvicorn

        self.port = port or free_port()
        if client_limits is not None:
            kw.update(client_limits.uvicorn_options())
        cfg = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level=kw.pop("log_level", "warning"),
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=drain_timeout_s,
            **kw,
        )
        if client_limits is not None:
            client_limits.attach(cfg)
        self.server = uvicorn.Server(cfg)
        self.server.install_signal_handlers = lambda: None  # not the main thread
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)

    def __enter__(self) -> UvicornThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def write_pool_yaml(path: str | os.PathLike, models: list[dict]) -> Path:
    """A pool YAML from entries {name, base_url, model[, price_input_per_1m, price_output_per_1m, timeout_s]}."""
    from caproute.collect.config import ModelEndpoint, PoolConfig, dump_pool_config

    eps = [
        ModelEndpoint(**{"api_key_env": "", "price_input_per_1m": 1.0, "price_output_per_1m": 2.0, **m})
        for m in models
    ]
    return dump_pool_config(PoolConfig(models=eps), path)


TEST_MODELS = ("big", "mid", "small")


def synthetic_observations(models=TEST_MODELS, n_train: int = 60, n_test: int = 40, seed: int = 0):
    """Observations of our construction with a known ordering, for serving tests.

    Model k's success probability on a query of topic t is base[k] + shift[k, t] (clipped to
    [0.02, 0.98]) with base = 0.85, 0.6, 0.35, ... and shifts N(0, 0.15): the first model is the
    best and the most expensive, the last the cheapest (prices 1e-4, 2e-5, 5e-6, ... USD x
    lognormal(0, 0.2)). Training queries have 3 rewrites x 3 decodes per model, test queries 3 + 3.
    Query texts are 6 words of their topic among filler, so TF-IDF separates topics.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    m = len(models)
    base = np.linspace(0.85, 0.35, m) if m > 1 else np.array([0.7])
    price = 1e-4 * (0.2 ** np.arange(m)) ** 1.15
    shift = rng.normal(0, 0.15, size=(m, 10))
    rows = []
    for q in range(n_train + n_test):
        split = "train" if q < n_train else "test"
        topic = q % 10
        words = [f"topic{topic}word{j}" for j in rng.integers(0, 20, 6)] + [
            f"filler{j}" for j in rng.integers(0, 200, 6)
        ]
        text = f"question {q}: " + " ".join(rng.permutation(words))
        grid = (
            [(k, r, "prompt_variation") for k in range(3) for r in range(3)]
            if split == "train"
            else [(k, 0, "prompt_variation") for k in range(3)]
            + [(-1, r, "decoding_variation") for r in range(3)]
        )
        for i, name in enumerate(models):
            p = float(np.clip(base[i] + shift[i, topic], 0.02, 0.98))
            for k, r, kind in grid:
                rows.append(
                    (
                        "synthetic-serve",
                        split,
                        f"q{q}",
                        name,
                        k,
                        r,
                        kind,
                        float(rng.random() < p),
                        float(price[i] * rng.lognormal(0, 0.2)),
                        text,
                    )
                )
    return pd.DataFrame(
        rows,
        columns=[
            "dataset",
            "split",
            "query_id",
            "model",
            "prompt_variant_id",
            "decode_id",
            "observation_type",
            "score",
            "cost",
            "question",
        ],
    )


def train_router(out: str | os.PathLike, obs=None, router: str = "knn", features: str = "tfidf") -> Path:
    """Train and save a routing pipeline (default: on :func:`synthetic_observations`)."""
    from caproute.routers.pipeline import train_pipeline

    obs = synthetic_observations() if obs is None else obs
    return train_pipeline(obs, router=router, features=features).save(out)
