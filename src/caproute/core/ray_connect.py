"""Connecting to Ray: one rule for every ``--engine ray [--ray-address ADDR]`` command (bench, duel,
meta, collect). Tested with Ray 2.60 (pyproject pins the tested range).

Token authentication (issue 16). Since Ray 2.5x a *local* ``ray.init()`` turns token authentication
on and writes a token to ``~/.ray/auth_token`` when none exists (caproute's own ``--engine ray``
without an address does this, and so does the test suite), and ``ray start --head`` turns it on
whenever such a token exists. A driver that connects with an explicit address, however, does not
turn it on by itself (Ray only does that for ``address="auto"``), so ``--ray-address HEAD:6379``
failed with ``InvalidAuthToken: Authentication token is missing or incorrect`` until
``RAY_AUTH_MODE=token`` was set. :func:`init_ray` applies Ray's own "auto" rule to explicit
addresses too: when ``RAY_AUTH_MODE`` is unset and a token is available (``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), it connects in token mode. A token-mode driver
also connects to a cluster without authentication (checked with Ray 2.60). ``RAY_AUTH_MODE`` set by
the user always wins.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from caproute.errors import ConfigError

AUTH_DOC = "docs/scaling.md (Ray token authentication)"


def ray_token_available() -> bool:
    """Whether Ray would find an authentication token (the places Ray 2.60 reads)."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return Path(path).expanduser().is_file()
    return (Path.home() / ".ray" / "auth_token").is_file()


def init_ray(address: str | None) -> bool:
    """Connect to the Ray cluster at ``address``, or start a private instance on loopback
    (127.0.0.1) when ``address`` is None. Returns whether this call initialised Ray. Ray's INFO
    lines are not printed; a failed connection is a :class:`ConfigError` that says what to check."""
    import ray

    if ray.is_initialized():
        return False
    if not address:
        ray.init(log_to_driver=False, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level=logging.WARNING)
        return True
    if "RAY_AUTH_MODE" not in os.environ and ray_token_available():
        # Ray's rule for address="auto", applied to explicit addresses. Ray reads the mode into its
        # config when it is imported, so the config is refreshed, as Ray's own _enable_token_auth does.
        os.environ["RAY_AUTH_MODE"] = "token"
        try:
            from ray._raylet import Config

            Config.initialize("")
        except (ImportError, AttributeError):  # another Ray layout: the variable alone (read at import)
            pass
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as e:
        mode = os.environ.get("RAY_AUTH_MODE", "unset")
        raise ConfigError(
            f"cannot connect to the Ray cluster at {address} ({type(e).__name__}: {e}). Check that "
            f"`ray start --head` runs there with the same Ray version as here ({ray.__version__}). If the "
            f"cluster uses token authentication (RAY_AUTH_MODE is {mode} here), copy the head node's "
            f"~/.ray/auth_token to this machine or set RAY_AUTH_TOKEN, and set RAY_AUTH_MODE=token; see "
            f"{AUTH_DOC}") from None
    return True
