"""Run the proxy under uvicorn. SIGTERM / Ctrl-C stop accepting connections, let in-flight requests
and streams finish (up to ``drain_timeout_s``), then close the backends and the feedback store.

``bind_socket`` binds the listening socket before anything is printed (a port in use is a named
error, not a uvicorn traceback after the banner). With ``workers > 1`` that one socket is shared by
N worker processes (uvicorn's process supervisor; the kernel spreads connections over them). Every
worker builds its app from the same :class:`ServeConfig` (passed in the environment as JSON) and so
loads the same routers and policy files; all write the one SQLite feedback store (WAL; each
worker's writer thread commits its own groups, and retries while another holds the write lock).
SIGHUP restarts the workers (policy files are then read again, by every worker).

Client connections run under :mod:`caproute.serve.slow_clients` (header, body and keep-alive
deadlines, a connection cap), and every worker ends when its parent dies, even by ``kill -9``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket

from caproute.errors import ConfigError
from caproute.serve.config import ServeConfig
from caproute.serve.slow_clients import PARENT_ENV, ClientLimits, exit_with_parent

CONFIG_ENV = "CAPROUTE_SERVE_CONFIG_JSON"


def build_server(config: ServeConfig):
    """A ``uvicorn.Server`` for the app (loads and checks everything; does not listen yet)."""
    import uvicorn

    from caproute.serve.app import create_app

    app = create_app(config)
    return uvicorn.Server(_uvicorn_config(config, app, host=config.host, port=config.port))


def _uvicorn_config(config: ServeConfig, app, **kw):
    """The one ``uvicorn.Config`` of a server or of the workers' supervisor (``kw``: app-specific)."""
    import uvicorn

    limits = ClientLimits.of(config)
    uv = uvicorn.Config(
        app,
        log_level=config.log_level,
        access_log=config.log_level == "debug",
        lifespan="on",
        timeout_graceful_shutdown=config.drain_timeout_s,
        proxy_headers=False,
        server_header=False,
        **limits.uvicorn_options(),
        **kw,
    )
    limits.attach(uv)
    return uv


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
    _setup_logging(config)
    limit_blas_threads(config.blas_threads)
    server = build_server(config)
    settle_heap()
    return server


#: the cyclic collector's first threshold in a server process (PROPOSED; CPython's default is 700)
GC_THRESHOLD0 = 20_000


def settle_heap() -> None:
    """After a server process loaded its app: collect once, move every object alive now (modules,
    the app, routers, schemas: some 170,000 tracked objects) out of the cyclic garbage collector's
    generations (``gc.freeze``), and run the youngest generation after 20,000 net allocations
    instead of 700.

    The frozen objects live as long as the process; left in, each full collection walked them all
    (measured: 72 ms, a latency spike, about once per 5,000 routed requests). A routed request
    leaves no reference cycle (tests/test_serve_hot_path.py checks it), so the young collections
    found nothing to free: at 50 concurrent requests the ~5,000 objects of the requests in flight
    crossed 700 net allocations about every 25 requests and were walked each time (~10 us per
    request); at 20,000 they almost never are, and what cycles an error path leaves are still
    collected, a few megabytes later. For server processes only: a process that builds many apps
    (tests) keeps the defaults."""
    import gc

    gc.collect()
    gc.freeze()
    _, t1, t2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD0, t1, t2)


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket for ``host:port``; :class:`ConfigError` when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"--port {port}: address {host}:{port} is already in use (another server listens there); "
                "pick another --port"
            ) from None
        raise ConfigError(f"--host {host} --port {port}: cannot bind: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def worker_app():
    """uvicorn app factory of one worker process: the config comes from :data:`CONFIG_ENV`."""
    from caproute.serve.app import create_app

    exit_with_parent()  # no orphan keeps the port bound after a kill -9 of the supervisor
    config = ServeConfig.model_validate_json(os.environ[CONFIG_ENV])
    _setup_logging(config)
    limit_blas_threads(config.blas_threads)
    app = create_app(config)
    settle_heap()
    return app


def _setup_logging(config: ServeConfig) -> None:
    log = logging.getLogger("caproute")
    if not log.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        log.addHandler(h)
    log.setLevel(config.log_level.upper())


def run_workers(config: ServeConfig, sock: socket.socket) -> None:
    """Serve with ``config.workers`` processes on ``sock`` until interrupted (blocking)."""
    from uvicorn.supervisors import Multiprocess

    os.environ[CONFIG_ENV] = config.model_dump_json(by_alias=True)
    os.environ[PARENT_ENV] = str(os.getpid())
    uv = _uvicorn_config(config, "caproute.serve.server:worker_app", factory=True, host=config.host,
                         port=sock.getsockname()[1], workers=config.workers)
    Multiprocess(uv, sockets=[sock]).run()  # each worker process runs its own uvicorn.Server


def run_server(config: ServeConfig) -> None:
    """Serve until interrupted (blocking)."""
    sock = bind_socket(config.host, config.port)
    if config.workers > 1:
        run_workers(config, sock)
    else:
        prepare_server(config).run(sockets=[sock])
