"""A lean HTTP/1.1 keep-alive transport for ``httpx.AsyncClient`` on plain asyncio streams.

httpx's default transport (httpcore on anyio) costs about 0.8 ms of CPU per request here, and
2-3 ms at 50 concurrent requests (its pool re-scans every connection for every queued request):
more than everything else the proxy does. This transport plugs into httpx's documented extension
point (``AsyncBaseTransport``), so the proxy still builds, sends and reads ``httpx`` requests and
responses (status handling, decoding, timeouts and exceptions are httpx's), but moves bytes with
``asyncio.open_connection`` and a per-host stack of idle connections.

Scope: ``http://`` only (the proxy mounts httpx's own transport for ``https://``), HTTP/1.1,
``content-length``, ``chunked`` or read-until-close bodies. A request that fails on a *reused*
connection before any byte of the answer arrived is retried once on a new connection (the server
closed an idle keep-alive connection); every other failure is raised as the matching
``httpx`` exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx

_MAX_HEADER = 64 * 1024


class _Conn:
    __slots__ = ("reader", "writer", "last_used", "reused")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer, self.last_used, self.reused = reader, writer, time.monotonic(), False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _Body(httpx.AsyncByteStream):
    """The response body; returns the connection to the pool once read to the end."""

    def __init__(
        self,
        transport: LeanTransport,
        key,
        conn: _Conn,
        length: int | None,
        chunked: bool,
        keep_alive: bool,
        timeout: float | None,
    ):
        self.t, self.key, self.conn, self.length, self.chunked = transport, key, conn, length, chunked
        self.keep_alive, self.timeout, self.done = keep_alive, timeout, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        r = self.conn.reader
        try:
            if self.chunked:
                while True:
                    line = await self._read(r.readuntil(b"\r\n"))
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while (await self._read(r.readuntil(b"\r\n"))) != b"\r\n":  # trailers
                            pass
                        break
                    data = await self._read(r.readexactly(size + 2))
                    yield data[:-2]
            elif self.length is not None:
                left = self.length
                while left > 0:
                    data = await self._read(r.read(min(left, 65536)))
                    if not data:
                        raise httpx.RemoteProtocolError("connection closed before the end of the body")
                    left -= len(data)
                    yield data
            else:
                while data := await self._read(r.read(65536)):
                    yield data
                self.keep_alive = False
            self.done = True
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as e:
            raise httpx.ReadError(f"{type(e).__name__}: {e}") from None

    async def _read(self, aw):
        try:
            return await asyncio.wait_for(aw, self.timeout) if self.timeout else await aw
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading the response body") from None

    async def aclose(self) -> None:
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        if self.done and self.keep_alive:
            self.t._release(self.key, conn)
        else:
            conn.close()


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_idle_per_host: int = 256, keepalive_expiry: float = 3.0):
        self.max_idle, self.expiry = max_idle_per_host, keepalive_expiry
        self._idle: dict[tuple[str, int], list[_Conn]] = {}

    def _release(self, key, conn: _Conn) -> None:
        conn.last_used, conn.reused = time.monotonic(), True
        stack = self._idle.setdefault(key, [])
        if len(stack) < self.max_idle and not conn.writer.is_closing():
            stack.append(conn)
        else:
            conn.close()

    async def _connect(self, key, timeout: float | None) -> _Conn:
        try:
            coro = asyncio.open_connection(*key)
            reader, writer = await (asyncio.wait_for(coro, timeout) if timeout else coro)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect to {key[0]}:{key[1]} timed out") from None
        except OSError as e:
            raise httpx.ConnectError(f"{key[0]}:{key[1]}: {e.strerror or e}") from None
        return _Conn(reader, writer)

    def _take(self, key) -> _Conn | None:
        stack = self._idle.get(key)
        now = time.monotonic()
        while stack:
            conn = stack.pop()
            if (
                now - conn.last_used < self.expiry
                and not conn.writer.is_closing()
                and not conn.reader.at_eof()
            ):
                return conn
            conn.close()
        return None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"LeanTransport serves http:// only, not {url.scheme}://")
        key = (url.host, url.port or 80)
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        target = url.raw_path.decode("ascii")
        head = [f"{request.method} {target} HTTP/1.1".encode()]
        head += [k + b": " + v for k, v in request.headers.raw]
        if b"content-length" not in {k.lower() for k, _ in request.headers.raw} and body:
            head.append(b"content-length: " + str(len(body)).encode())
        payload = b"\r\n".join(head) + b"\r\n\r\n" + body
        for attempt in (0, 1):
            conn = self._take(key) if attempt == 0 else None
            if conn is None:
                conn = await self._connect(key, timeouts.get("connect"))
            try:
                conn.writer.write(payload)
                status, headers = await self._head(conn, timeouts.get("read"))
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                conn.close()
                if conn.reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: once more, on a new one
                raise httpx.ReadError(f"{type(e).__name__}: {e}") from None
            except BaseException:
                conn.close()
                raise
            break
        lower = {k.lower(): v for k, v in headers}
        chunked = b"chunked" in lower.get(b"transfer-encoding", b"").lower()
        length = None if chunked else (int(lower[b"content-length"]) if b"content-length" in lower else None)
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            length = 0
        keep_alive = lower.get(b"connection", b"").lower() != b"close"
        stream = _Body(self, key, conn, length, chunked, keep_alive, timeouts.get("read"))
        return httpx.Response(
            status, headers=headers, stream=stream, extensions={"http_version": b"HTTP/1.1"}
        )

    async def _head(self, conn: _Conn, timeout: float | None) -> tuple[int, list[tuple[bytes, bytes]]]:
        try:
            coro = conn.reader.readuntil(b"\r\n\r\n")
            raw = await (asyncio.wait_for(coro, timeout) if timeout else coro)
        except TimeoutError:
            conn.close()
            raise httpx.ReadTimeout("timed out waiting for the response") from None
        except asyncio.LimitOverrunError:
            conn.close()
            raise httpx.RemoteProtocolError("response header too large") from None
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            conn.close()
            raise httpx.RemoteProtocolError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
        headers = []
        for line in lines[1:]:
            k, sep, v = line.partition(b":")
            if sep:
                headers.append((k.strip(), v.strip()))
        return int(parts[1]), headers

    async def aclose(self) -> None:
        for stack in self._idle.values():
            for conn in stack:
                conn.close()
        self._idle.clear()
