"""Limits against slow and idle clients, and workers that end with their parent.

uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``) but nothing else: a client
that connects and sends nothing, or trickles header lines ("slowloris") or its body a byte at a
time, holds a connection (a file descriptor, buffers) for as long as it likes. This module runs
uvicorn's ``httptools`` protocol with four limits (:class:`ClientLimits`, from the serve config):

- ``header_timeout_s``: a request's line and headers must be complete within this time of the
  connection opening, or of the request's first byte on a kept-alive connection;
- ``body_timeout_s``: its body must be complete within this time of its headers;
- ``keep_alive_timeout_s``: an idle kept-alive connection is closed (uvicorn's own timer);
- ``max_connections``: open connections per worker process; one more is closed at once.

A connection past a deadline is closed (counted in ``caproute_client_connections_closed{reason}``);
a request whose headers arrived in time and whose body is complete is never cut by these limits,
however long its answer (a stream) takes.

:func:`exit_with_parent` makes a ``serve --workers N`` worker end when its parent supervisor dies,
even by ``kill -9`` (Linux ``PR_SET_PDEATHSIG``), so no orphan keeps the port bound.

Writes to a client are coalesced per event-loop iteration (:class:`CoalescingTransport`):
uvicorn writes a response's status line and headers, then its body, as two writes, i.e. two
``send`` system calls; joined they are one (issue 27: each ``send`` on loopback cost the proxy
about as much CPU as the routing decision).

The protocol also tells a request when its client leaves (:meth:`_GuardedProtocol.watch_lost`,
reached through the request scope's :data:`CONNECTION_KEY`): a callback run from
``connection_lost``, where an ASGI app would otherwise keep a task waiting on ``receive()`` for
``http.disconnect`` for each request in flight.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from dataclasses import dataclass

log = logging.getLogger("caproute.serve")

PROTOCOL = "caproute.serve.slow_clients:GuardedProtocol"
PARENT_ENV = "CAPROUTE_SERVE_PARENT_PID"
CLOSED: Counter[str] = Counter()  # connections closed by these limits in this process, by reason
#: request scope key of the protocol serving the request (see :meth:`_GuardedProtocol.watch_lost`)
CONNECTION_KEY = "caproute.connection"


@dataclass(frozen=True)
class ClientLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_timeout_s: float = 5.0
    max_connections: int = 1000

    @classmethod
    def of(cls, config) -> ClientLimits:
        """The limits of a :class:`~caproute.serve.config.ServeConfig`."""
        return cls(config.header_timeout_s, config.body_timeout_s, config.keep_alive_timeout_s,
                   config.max_connections)

    def uvicorn_options(self) -> dict:
        """Keyword arguments for ``uvicorn.Config``; pass the result of :meth:`attach` after it."""
        return {"http": PROTOCOL, "timeout_keep_alive": self.keep_alive_timeout_s}

    def attach(self, uv_config) -> None:
        """Give the uvicorn config these limits (read by every connection's protocol; pickled
        with the config into worker processes)."""
        uv_config.caproute_client_limits = self


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - httptools is a dependency of caproute[serve]
    _Base = None


class CoalescingTransport:
    """A transport whose writes within one event-loop iteration go out as one write.

    The first ``write`` of an iteration is held and a flush is scheduled with ``call_soon``; the
    writes that follow before the loop runs it (a response's body right after its headers) are
    joined to it. Order is kept, and ``close()`` flushes first, so the bytes on the wire are the
    same as the wrapped transport's; they leave at most one loop iteration later. Everything
    else is the wrapped transport's."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport, loop):
        self._transport, self._loop = transport, loop
        self._held: list | None = None

    def write(self, data) -> None:
        if not data:
            return
        if self._held is None:
            self._held = [data]
            self._loop.call_soon(self._flush)
        else:
            self._held.append(data)

    def writelines(self, chunks) -> None:
        for data in chunks:
            self.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        held = self._held
        return self._transport.get_write_buffer_size() + (sum(len(d) for d in held) if held else 0)

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class _GuardedProtocol(_Base or object):
    """uvicorn's HTTP protocol with header and body deadlines and a connection cap."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self._limits: ClientLimits = getattr(config, "caproute_client_limits", None) or ClientLimits()
        self._deadline = None  # the armed timer (header or body), if any
        self._phase = "header"  # header: waiting for a request's headers; body: reading its body; app
        self._lost_watchers: list = []  # callbacks of requests in flight, run when the connection is lost

    # -- the client leaving ------------------------------------------------------------------------
    def watch_lost(self, callback):
        """Run ``callback()`` once when this connection is lost (at once if it already is);
        returns the function that stops watching (call it when the request no longer cares)."""
        if self._phase == "closed":
            callback()
            return _nothing
        self._lost_watchers.append(callback)
        return lambda: self._unwatch(callback)

    def _unwatch(self, callback) -> None:
        with contextlib.suppress(ValueError):  # already run
            self._lost_watchers.remove(callback)

    # -- timers ------------------------------------------------------------------------------------
    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expire, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, phase: str) -> None:
        self._deadline = None
        if self._phase != phase or self.transport.is_closing():
            return
        if phase == "header" and self.cycle is not None and not self.cycle.response_complete:
            return  # a (pipelined) request is being answered on this connection
        CLOSED[f"{phase}_timeout"] += 1
        log.info("closing a client connection: its %s did not arrive in time (%s)", phase, self.client)
        self.transport.close()

    # -- protocol hooks ----------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        super().connection_made(CoalescingTransport(transport, self.loop))
        if len(self.connections) > self._limits.max_connections:
            CLOSED["max_connections"] += 1
            log.warning("closing a client connection: %d open (max_connections)", len(self.connections) - 1)
            self._phase = "closed"
            transport.close()
            return
        self._arm("header", self._limits.header_timeout_s)  # a client that sends nothing is closed too

    def connection_lost(self, exc) -> None:
        self._disarm()
        self._phase = "closed"
        super().connection_lost(exc)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope.pop(CONNECTION_KEY, None)  # no cycle protocol -> scope -> protocol outlives the connection
        watchers, self._lost_watchers = self._lost_watchers, []
        for callback in watchers:
            callback()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[CONNECTION_KEY] = self

    def data_received(self, data: bytes) -> None:
        # the first byte of a new request on a kept-alive connection starts its header deadline
        if self._phase == "idle":
            self._arm("header", self._limits.header_timeout_s)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._arm("body", self._limits.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._phase = "app"
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._phase == "app":
            self._phase = "idle"  # uvicorn's keep-alive timer runs until the next request's first byte


def _nothing() -> None:
    pass


if _Base is not None:
    GuardedProtocol = _GuardedProtocol
else:  # pragma: no cover

    log.warning("httptools is not installed: header and body deadlines for clients are not enforced")


def exit_with_parent() -> None:
    """In a worker process: ask the kernel for SIGTERM when the parent dies (Linux
    ``PR_SET_PDEATHSIG``), then exit at once if it already did (the race before the prctl).
    The parent's pid comes from :data:`PARENT_ENV`. Elsewhere than Linux: nothing."""
    from caproute.core.procs import die_with_parent

    parent = os.environ.get(PARENT_ENV)
    if not die_with_parent():
        log.warning("prctl(PR_SET_PDEATHSIG) unavailable: workers may outlive their parent")
    if parent is not None and os.getppid() != int(parent):
        log.error("the serve parent process %s is gone: this worker exits", parent)
        os._exit(1)
