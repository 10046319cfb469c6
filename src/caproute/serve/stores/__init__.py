"""Where the proxy keeps its state: :func:`open_state` picks SQLite files (default) or PostgreSQL
(``ServeConfig.state`` = ``postgresql://...``); :func:`check_state` runs before the banner."""

from __future__ import annotations

from caproute.serve.stores.base import ProxyState
from caproute.serve.stores.pg import is_postgres_url


def state_class(config) -> type[ProxyState]:
    if is_postgres_url(getattr(config, "state", None)):
        from caproute.serve.stores.postgres import PostgresState

        return PostgresState
    from caproute.serve.stores.sqlite import SqliteState

    return SqliteState


def open_state(config) -> ProxyState:
    """The state of a server with ``config`` (opens nothing until ``start``)."""
    return state_class(config)(config)


def check_state(config) -> None:
    """ConfigError unless the state can be opened: SQLite paths, or a reachable PostgreSQL with a
    schema this caproute can use (created or migrated here)."""
    state_class(config).check(config)


__all__ = ["ProxyState", "check_state", "is_postgres_url", "open_state"]
