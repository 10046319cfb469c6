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
    uv = uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level,
                        access_log=config.log_level == "debug", lifespan="on",
                        timeout_graceful_shutdown=config.drain_timeout_s, proxy_headers=False,
                        server_header=False)
    return uvicorn.Server(uv)


def run_server(config: ServeConfig) -> None:
    """Serve until interrupted (blocking)."""
    log = logging.getLogger("caproute")
    if not log.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        log.addHandler(h)
    log.setLevel(config.log_level.upper())
    build_server(config).run()
