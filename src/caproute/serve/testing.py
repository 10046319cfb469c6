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

    def __init__(self, app, port: int | None = None, *, drain_timeout_s: float = 10.0, **kw):
        import uvicorn

        self.port = port or free_port()
        cfg = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level=kw.pop("log_level", "warning"),
                             access_log=False, lifespan="on", timeout_graceful_shutdown=drain_timeout_s, **kw)
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

    eps = [ModelEndpoint(**{"api_key_env": "", "price_input_per_1m": 1.0, "price_output_per_1m": 2.0, **m})
           for m in models]
    return dump_pool_config(PoolConfig(models=eps), path)


def train_builtin_router(out: str | os.PathLike, models: dict[str, str] | None = None,
                         router: str = "knn", features: str = "tfidf") -> Path:
    """Train a router on the builtin observations, renaming its models (``{old: new}``) first."""
    from caproute.data.source import load_observations
    from caproute.routers.pipeline import train_pipeline

    obs, _ = load_observations(data="builtin")
    if models:
        obs = obs.assign(model=obs["model"].astype(str).map(lambda m: models.get(m, m)))
    return train_pipeline(obs, router=router, features=features).save(out)
