"""Run the proxy under uvicorn. SIGTERM / Ctrl-C stop accepting connections, let in-flight requests
and streams finish (up to ``drain_timeout_s``), then close the backends and the feedback store."""

from __future__ import annotations

import logging

from caproute.serve.config import ServeConfig


def build_server(config: ServeConfig):
    """A ``uvicorn.Server`` for the app (loads and checks everything; does not listen yet)."""
    import uvicorn

    from caproute.serve.app import create_app

    app = create_app(config)
    uv = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        access_log=config.log_level == "debug",
        lifespan="on",
        timeout_graceful_shutdown=config.drain_timeout_s,
        proxy_headers=False,
        server_header=False,
    )
    return uvicorn.Server(uv)


def limit_blas_threads(n: int | None) -> None:
    """Process-wide BLAS/OpenMP thread cap. A proxy decides many small batches concurrently; a
    multi-threaded BLAS call on a busy 2-core machine can stall for hundreds of milliseconds
    (measured: a 50 x 8k x 200 float32 product, 600 ms with 2 OpenBLAS threads, 3-15 ms with 1)."""
    if n is None:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=int(n))


def prepare_server(config: ServeConfig):
    """Logging, the BLAS cap and the uvicorn server for ``config`` (raises on a bad config)."""
    log = logging.getLogger("caproute")
    if not log.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        log.addHandler(h)
    log.setLevel(config.log_level.upper())
    limit_blas_threads(config.blas_threads)
    return build_server(config)


def run_server(config: ServeConfig) -> None:
    """Serve until interrupted (blocking)."""
    prepare_server(config).run()
