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

Malformed HTTP from a server is ``httpx.RemoteProtocolError``, never another exception: a status
line that is not ``HTTP/1.x NNN``, a header line without a name, a ``Content-Length`` that is not
a number (or two that differ), a chunk size that is not hex or a chunk not ended by CRLF. Every
body is capped (:data:`MAX_RESPONSE_BYTES`, ``max_response_bytes`` of :func:`make_client`): a
bigger one is :class:`ResponseTooLarge` (a ``RemoteProtocolError``), raised before it is read
when its ``Content-Length`` says so, else as soon as the cap is passed, so a backend cannot
grow the proxy's memory with its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

_MAX_HEADER = 64 * 1024
_MAX_TRAILER_LINES = 64
_PIECE = 65536
MAX_RESPONSE_BYTES = 16 << 20
"""Default cap on one response body (16 MiB): far above any chat completion, far below a threat."""
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: .*)?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_DIGITS = re.compile(rb"[0-9]{1,18}")


def header_values(headers: httpx.Headers | list[tuple[bytes, bytes]], *names: bytes) -> list[bytes | None]:
    """The values of ``names`` (lower-case) in ``headers`` (httpx's, or raw pairs), several joined
    by ``, `` as httpx's ``headers.get`` joins them; ``None`` where absent. One pass over the raw
    headers, where each ``headers.get`` is a pass of its own."""
    found: dict[bytes, list[bytes]] = {}
    for k, v in headers.raw if isinstance(headers, httpx.Headers) else headers:
        k = k.lower()
        if k in names:
            found.setdefault(k, []).append(v)
    return [b", ".join(found[n]) if n in found else None for n in names]


def not_identity(encoding: bytes | None) -> bool:
    """Whether a ``Content-Encoding`` value names an encoding (absent, empty or identity: no)."""
    return encoding is not None and encoding.strip().lower() not in (b"", b"identity")


class ResponseTooLarge(httpx.RemoteProtocolError):
    """A response body larger than the client's ``max_response_bytes``."""


def head_refusal(headers, max_bytes: int, identity_only: bool,
                 request: httpx.Request | None = None) -> httpx.RemoteProtocolError | None:
    """Why an answer is refused from its head alone (``headers``: httpx's or raw pairs), before its
    body is read: a declared ``Content-Length`` above ``max_bytes``, or, where only identity was
    accepted, a compressed body (it would escape the cap: a decompression bomb). ``None``: neither."""
    declared, encoding = header_values(headers, b"content-length", b"content-encoding")
    declared = (declared or b"").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        return ResponseTooLarge(
            f"response of {int(declared)} bytes, above the cap of {max_bytes} (max_response_bytes)", request=request
        )
    if identity_only and not_identity(encoding):
        shown = encoding.decode("latin-1").strip().lower()[:20]
        return httpx.RemoteProtocolError(
            f"response compressed ({shown}) although only identity was accepted", request=request
        )
    return None


def _framing(headers: list[tuple[bytes, bytes]], method: str, status: int) -> tuple[int | None, bool, bool]:
    """(content length or None, chunked, keep-alive) of a response; RemoteProtocolError when malformed."""
    lengths: set[bytes] = set()
    te = conn = b""
    for k, v in headers:
        k = k.lower()
        if k == b"content-length":
            lengths.update(x.strip() for x in v.split(b","))
        elif k == b"transfer-encoding":
            te += b"," + v.lower()
        elif k == b"connection":
            conn = v.lower()
    chunked = b"chunked" in te
    length = None
    if lengths and not chunked:
        if len(lengths) > 1 or not _DIGITS.fullmatch(next(iter(lengths))):
            shown = b", ".join(sorted(lengths))[:40]
            raise httpx.RemoteProtocolError(f"malformed Content-Length header: {shown!r}")
        length = int(next(iter(lengths)))
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        length = 0
    return length, chunked, conn != b"close"


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
                    size_hex = line.split(b";", 1)[0].strip()
                    if not _HEX.fullmatch(size_hex):
                        raise httpx.RemoteProtocolError(f"malformed chunk size line: {line[:40]!r}")
                    size = int(size_hex, 16)
                    if size == 0:
                        for _ in range(_MAX_TRAILER_LINES):  # trailers, then the empty line
                            if (await self._read(r.readuntil(b"\r\n"))) == b"\r\n":
                                break
                        else:
                            raise httpx.RemoteProtocolError("too many trailer lines")
                        break
                    async for data in self._exactly(r, size):  # in pieces: the size is the server's word
                        yield data
                    if await self._read(r.readexactly(2)) != b"\r\n":
                        raise httpx.RemoteProtocolError("chunk not followed by CRLF")
            elif self.length is not None:
                async for data in self._exactly(r, self.length):
                    yield data
            else:
                while data := await self._read(r.read(_PIECE)):
                    yield data
                self.keep_alive = False
            self.done = True
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError) as e:
            raise httpx.ReadError(f"{type(e).__name__}: {e}") from None

    async def _exactly(self, r: asyncio.StreamReader, n: int) -> AsyncIterator[bytes]:
        while n > 0:
            data = await self._read(r.read(min(n, _PIECE)))
            if not data:
                raise httpx.RemoteProtocolError("connection closed before the end of the body")
            n -= len(data)
            yield data

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
        conn, status, headers, framing = await self.exchange(
            key, payload, request.method, timeouts.get("connect"), timeouts.get("read")
        )
        stream = _Body(self, key, conn, *framing, timeouts.get("read"))
        return httpx.Response(
            status, headers=headers, stream=stream, extensions={"http_version": b"HTTP/1.1"}
        )

    async def exchange(self, key, payload: bytes, method: str, connect: float | None, read: float | None):
        """Send ``payload`` (a whole HTTP/1.1 request) to ``key`` (host, port) and read the answer's
        head: (connection, status, headers, (content length or None, chunked, keep-alive)). The
        body is the caller's to read from ``connection.reader``; then :meth:`_release` or close it.
        A failure on a reused connection before any byte came back is retried once on a new one."""
        for attempt in (0, 1):
            conn = self._take(key) if attempt == 0 else None
            if conn is None:
                conn = await self._connect(key, connect)
            try:
                conn.writer.write(payload)
                status, headers = await self._head(conn, read)
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                conn.close()
                if conn.reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: once more, on a new one
                raise httpx.ReadError(f"{type(e).__name__}: {e}") from None
            except BaseException:
                conn.close()
                raise
            break
        try:
            framing = _framing(headers, method, status)
        except httpx.RemoteProtocolError:
            conn.close()
            raise
        return conn, status, headers, framing

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
        status = _STATUS_LINE.fullmatch(lines[0])
        if status is None:
            conn.close()
            raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        headers = []
        for line in lines[1:]:
            k, sep, v = line.partition(b":")
            if not sep or not _TOKEN.fullmatch(k):
                conn.close()
                raise httpx.RemoteProtocolError(f"malformed response header line: {line[:80]!r}")
            headers.append((k, v.strip()))
        return int(status.group(1)), headers

    async def aclose(self) -> None:
        for stack in self._idle.values():
            for conn in stack:
                conn.close()
        self._idle.clear()


# -- per-request deadlines (shared by the proxy and the collector) ------------------------------------

DEADLINE_EXTENSION = "caproute.deadline"
"""``httpx`` request extension carrying a :class:`Deadline` for one request (overrides the default)."""


@dataclass(frozen=True)
class Deadline:
    """The time one HTTP request may take, end to end.

    - ``connect_s``: to open the TCP connection (capped by the others);
    - ``first_byte_s``: from sending the request to the response's status line and headers;
    - ``total_s``: from sending the request to the last byte of the body, streams included. A
      server that trickles bytes or sends only SSE ``: ping`` comments hits this deadline; read
      timeouts between bytes never reset it.
    - ``not_after``: an absolute ``time.monotonic()`` bound on top (the proxy's whole-request
      deadline, shared by the fallback attempts).

    ``None`` for ``connect_s`` / ``first_byte_s`` means "bounded by ``total_s`` only".
    """

    total_s: float
    connect_s: float | None = None
    first_byte_s: float | None = None
    not_after: float | None = None

    def bound(self, not_after: float | None) -> Deadline:
        """This deadline, also ending at ``not_after`` (monotonic) if that is sooner."""
        if not_after is None:
            return self
        end = not_after if self.not_after is None else min(self.not_after, not_after)
        return Deadline(self.total_s, self.connect_s, self.first_byte_s, end)


class DeadlineExceeded(httpx.TimeoutException):
    """The request ran past one of its :class:`Deadline` bounds (``phase``: connect, first_byte, total)."""

    def __init__(self, message: str, *, phase: str, request: httpx.Request | None = None):
        super().__init__(message, request=request)
        self.phase = phase


class DeadlineTransport(httpx.AsyncBaseTransport):
    """Wraps any async transport and enforces a :class:`Deadline` per request.

    The deadline is the request's ``caproute.deadline`` extension, else ``default``. The body stream
    is wrapped so that every read waits at most until the total deadline; when it passes, the
    inner stream is closed (its connection is dropped, never returned to a pool) and
    :class:`DeadlineExceeded` (an ``httpx.TimeoutException``) is raised. Closing the response early
    (a client that left) closes the backend connection the same way.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, default: Deadline | None = None,
                 max_response_bytes: int = MAX_RESPONSE_BYTES):
        self.inner, self.default, self.max_bytes = inner, default, max_response_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        d = request.extensions.get(DEADLINE_EXTENSION) or self.default
        if d is None:
            resp = await self.inner.handle_async_request(request)
            return await self._capped(resp, request, None, None)
        plan = _Plan(d, request)
        # the inner transport's own timeouts: connect as given; reads need none (this deadline
        # bounds them, and a per-read timer would cost a task per read in Python 3.11)
        request.extensions = {
            **request.extensions,
            "timeout": {"connect": plan.connect, "read": None, "write": None, "pool": plan.left},
        }
        resp = await plan.head(self.inner.handle_async_request(request))
        return await self._capped(resp, request, plan.loop_end(), plan.total_s)

    async def _capped(self, resp: httpx.Response, request: httpx.Request, loop_end: float | None,
                      total_s: float | None) -> httpx.Response:
        """``resp`` with its body under the deadline and the size cap (checked first from
        ``Content-Length``)."""
        body = _DeadlineBody(resp.stream, loop_end, total_s, request, self.max_bytes)
        identity_only = header_values(request.headers, b"accept-encoding")[0] == b"identity"
        refusal = head_refusal(resp.headers, self.max_bytes, identity_only, request)
        if refusal is not None:
            await body.aclose()
            raise refusal
        resp.stream = body  # the same response, its body read under the deadline and the cap
        return resp

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Plan:
    """One request's :class:`Deadline` turned into times: ``end`` (monotonic) of the whole
    exchange, ``left`` (seconds) for the answer's head, ``connect`` (seconds) for the connection."""

    __slots__ = ("end", "left", "connect", "phase", "total_s", "request")

    def __init__(self, d: Deadline, request: httpx.Request | None):
        now = time.monotonic()
        end = now + d.total_s
        if d.not_after is not None:
            end = min(end, d.not_after)
        head_end = min(end, now + d.first_byte_s) if d.first_byte_s is not None else end
        if head_end <= now:
            raise DeadlineExceeded("no time left for this request", phase="total", request=request)
        self.end, self.left, self.total_s, self.request = end, head_end - now, end - now, request
        self.connect = self.left if d.connect_s is None else min(d.connect_s, self.left)
        self.phase = "first_byte" if head_end < end else "total"

    def loop_end(self) -> float:
        """``end`` on the event loop's clock (for ``asyncio.timeout_at``)."""
        return asyncio.get_running_loop().time() + (self.end - time.monotonic())

    async def head(self, aw):
        """``await aw`` (sending and reading up to the answer's head) within ``left`` seconds;
        every timeout becomes :class:`DeadlineExceeded` naming its phase."""
        try:
            async with asyncio.timeout(self.left):
                return await aw
        except httpx.ConnectTimeout:
            raise self.connect_late() from None
        except (TimeoutError, httpx.TimeoutException):
            raise self.head_late() from None

    def connect_late(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"connect not done within {self.connect:.3g} s (connect deadline)", phase="connect", request=self.request
        )

    def head_late(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"no response headers within {self.left:.3g} s ({self.phase.replace('_', ' ')} deadline)",
            phase=self.phase,
            request=self.request,
        )

    def body_late(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"response not complete within {self.total_s:.3g} s (total deadline)",
            phase="total",
            request=self.request,
        )


class _DeadlineBody(httpx.AsyncByteStream):
    def __init__(self, inner, loop_end: float | None, total_s: float | None, request: httpx.Request,
                 max_bytes: int):
        self.inner, self.loop_end, self.total_s, self.request = inner, loop_end, total_s, request
        self.max_bytes = max_bytes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        it = self.inner.__aiter__()
        seen = 0
        while True:
            try:
                async with asyncio.timeout_at(self.loop_end):
                    chunk = await it.__anext__()
            except StopAsyncIteration:
                return
            except (TimeoutError, httpx.TimeoutException):
                await self.aclose()
                raise DeadlineExceeded(
                    f"response not complete within {self.total_s:.3g} s (total deadline)",
                    phase="total",
                    request=self.request,
                ) from None
            seen += len(chunk)
            if seen > self.max_bytes:
                await self.aclose()
                raise ResponseTooLarge(
                    f"response body above the cap of {self.max_bytes} bytes (max_response_bytes)",
                    request=self.request,
                )
            yield chunk

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


def make_mounts(
    *,
    lean: bool = True,
    max_connections: int = 512,
    default_deadline: Deadline | None = None,
    keepalive_expiry: float = 3.0,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
) -> dict[str, DeadlineTransport]:
    """The transports of :func:`make_client` by URL scheme (``"http://"``, ``"https://"``)."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
    )
    plain = (
        LeanTransport(max_idle_per_host=max_connections, keepalive_expiry=keepalive_expiry)
        if lean
        else httpx.AsyncHTTPTransport(limits=limits)
    )
    return {
        "http://": DeadlineTransport(plain, default_deadline, max_response_bytes),
        "https://": DeadlineTransport(httpx.AsyncHTTPTransport(limits=limits), default_deadline, max_response_bytes),
    }


def make_client(**transport_options) -> httpx.AsyncClient:
    """The one ``httpx.AsyncClient`` construction of caproute (the collector's ``openai`` client;
    the proxy sends through :class:`DirectSender` on the same transports): plain-HTTP backends
    through :class:`LeanTransport` (or httpx's transport), ``https://`` through httpx's, every
    request under a :class:`DeadlineTransport`. ``transport_options``: those of :func:`make_mounts`.

    keep-alive expiry sits below the usual 5 s server idle timeout (uvicorn, llama.cpp), so a pooled
    connection is not reused just as the server closes it. Every response body is capped at
    ``max_response_bytes`` (:class:`ResponseTooLarge`), and bodies are asked for uncompressed
    (``accept-encoding: identity``; a compressed one is a protocol error), so the cap holds.
    """
    return httpx.AsyncClient(mounts=make_mounts(**transport_options), timeout=None, trust_env=False,
                             headers=CLIENT_HEADERS)


CLIENT_HEADERS = {"accept-encoding": "identity"}
"""Headers every request of :func:`make_client` (and :class:`DirectSender`) carries besides httpx's defaults."""


class DirectSender:
    """The proxy's hot path to its backends: what ``make_client(...).send(request)`` does, without
    ``httpx.AsyncClient``'s per-request machinery that the proxy never uses (auth flow, redirect
    loop, cookie jar, event hooks, URL merging): the request goes straight to the transport of its
    scheme (:func:`make_mounts`). Requests built by :meth:`request` carry the same headers, in the
    same order, as ``make_client``'s ``build_request`` (httpx's defaults, then
    :data:`CLIENT_HEADERS`, then the caller's); the client's cookie jar is not kept, so a backend's
    ``Set-Cookie`` is never replayed on another user's request. Issue 27: about a tenth of the
    proxy's CPU per routed request went to ``AsyncClient.send`` and ``build_request``
    (``benchmarks/bench_serve.py``).
    """

    def __init__(self, mounts: dict[str, httpx.AsyncBaseTransport]):
        self.mounts = mounts
        with httpx.Client(trust_env=False, headers=CLIENT_HEADERS) as base:  # the async client's defaults too
            self._base_headers = httpx.Headers(base.headers)  # httpx's (user-agent, accept, ...) + ours
        self._timeout = httpx.Timeout(None).as_dict()

    def headers(self, extra: dict[str, str]) -> httpx.Headers:
        """The headers of a request with ``extra`` (build once per endpoint, pass to :meth:`request`)."""
        h = httpx.Headers(self._base_headers)
        h.update(extra)
        return h

    def request(self, method: str, url: httpx.URL, *, content: bytes, headers: httpx.Headers,
                extensions: dict | None = None) -> httpx.Request:
        """The request httpx's ``Request(method, url, content=..., headers=...)`` builds, with its
        ``Host`` first and ``Content-Length`` last, built directly (httpx's own preparation
        looks every default header up one by one: about 20 us per request here)."""
        ext = {"timeout": self._timeout, **(extensions or {})}
        if not url.host or any(k.lower() in (b"host", b"content-length", b"transfer-encoding")
                               for k, _ in headers.raw):
            return httpx.Request(method, url, content=content, headers=headers, extensions=ext)
        if content:
            raw = [(b"Host", url.netloc), *headers.raw, (b"Content-Length", str(len(content)).encode("ascii"))]
        elif method.upper() in ("POST", "PUT", "PATCH"):
            raw = [(b"Host", url.netloc), (b"Content-Length", b"0"), *headers.raw]
        else:
            raw = [(b"Host", url.netloc), *headers.raw]
        req = httpx.Request(method, url, headers=raw, stream=httpx.ByteStream(content), extensions=ext)
        req.read()  # as httpx does for content given as bytes
        return req

    async def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """The response (its body read unless ``stream``); httpx's exceptions as ``client.send``'s."""
        transport = self.mounts.get(request.url.scheme + "://")
        if transport is None:
            raise httpx.UnsupportedProtocol(f"no transport for {request.url.scheme}:// URLs", request=request)
        resp = await transport.handle_async_request(request)
        resp.request = request
        if not stream:
            try:
                await resp.aread()
            except BaseException:
                await resp.aclose()
                raise
        return resp

    async def fetch(self, request: httpx.Request) -> tuple[int, bytes]:
        """(status, body) of a non-streaming request: the bytes as ``send(request).content`` has
        them, read straight from the transport's stream (httpx's decoder and chunker cost about
        10 us per response here). A body with a ``content-encoding`` other than identity, which
        the transports refuse when identity was asked for, is decoded by httpx."""
        resp = await self.send(request, stream=True)
        if not_identity(header_values(resp.headers, b"content-encoding")[0]):
            await resp.aread()
            return resp.status_code, resp.content
        try:
            body = b"".join([chunk async for chunk in resp.stream])
        finally:
            await resp.aclose()
        return resp.status_code, body

    def target(self, url: httpx.URL, headers: httpx.Headers) -> Target:
        """A POST target for :meth:`post`: ``url`` with ``headers`` (from :meth:`headers`),
        prepared once."""
        transport = self.mounts.get(url.scheme + "://")
        head = None
        if (
            isinstance(transport, DeadlineTransport)
            and isinstance(transport.inner, LeanTransport)
            and url.scheme == "http"
            and url.host
            and header_values(headers, b"accept-encoding")[0] == b"identity"
            and not any(k.lower() in (b"host", b"content-length", b"transfer-encoding") for k, _ in headers.raw)
        ):
            # the bytes LeanTransport writes for request(): request line, Host, headers, Content-Length
            lines = [b"POST " + url.raw_path + b" HTTP/1.1", b"Host: " + url.netloc]
            lines += [k + b": " + v for k, v in headers.raw]
            head = b"\r\n".join(lines) + b"\r\nContent-Length: "
        return Target(url, headers, transport if head is not None else None, head)

    async def post(self, target: Target, content: bytes, deadline: Deadline | None) -> tuple[int, bytes]:
        """(status, body) of POSTing ``content`` to ``target`` under ``deadline``: what
        ``fetch(request("POST", ...))`` gives, with the same exceptions and messages (without
        their ``request``). Plain-HTTP targets on :class:`LeanTransport` skip httpx's request
        and response objects and the body's stream wrappers (issue 27: the backend exchange was
        about 28% of the proxy's CPU per routed request); others go through :meth:`fetch`."""
        dt = target.transport
        if dt is None or not content:
            ext = None if deadline is None else {DEADLINE_EXTENSION: deadline}
            return await self.fetch(self.request("POST", target.url, content=content, headers=target.headers,
                                                 extensions=ext))
        lean: LeanTransport = dt.inner
        d = deadline or dt.default
        plan = None if d is None else _Plan(d, None)
        payload = target.head + str(len(content)).encode("ascii") + b"\r\n\r\n" + content
        exchange = lean.exchange(target.key, payload, "POST", plan and plan.connect, None)
        if plan is None:
            return await self._answer(dt, target.key, await exchange, None, None)
        in_body = []  # one timer for head and body: moved to the total deadline once the head is in
        try:
            async with asyncio.timeout(plan.left) as timer:
                return await self._answer(dt, target.key, await exchange, plan, (timer, in_body))
        except httpx.ConnectTimeout:
            raise plan.connect_late() from None
        except (TimeoutError, httpx.TimeoutException):
            raise (plan.body_late() if in_body else plan.head_late()) from None

    @staticmethod
    async def _answer(dt: DeadlineTransport, key, head, plan: _Plan | None, timer) -> tuple[int, bytes]:
        """(status, body) of :meth:`post` once the answer's ``head`` (from
        :meth:`LeanTransport.exchange`) is in: the size cap and encoding checks of
        :class:`DeadlineTransport`, then the body."""
        conn, status, headers, (length, chunked, keep_alive) = head
        try:
            refusal = head_refusal(headers, dt.max_bytes, identity_only=True)  # targets accept identity only
            if refusal is not None:
                raise refusal
            if timer is not None:
                if plan.phase == "first_byte":  # the head had less time than the whole exchange
                    timer[0].reschedule(plan.loop_end())
                timer[1].append(True)
            body = await _read_body(dt.inner, key, conn, length, chunked, keep_alive, dt.max_bytes)
        except BaseException:
            conn.close()
            raise
        return status, body

    async def aclose(self) -> None:
        for t in self.mounts.values():
            await t.aclose()


class Target:
    """A POST target of :meth:`DirectSender.post`; ``transport`` and ``head`` are set where the
    lean path serves it."""

    __slots__ = ("url", "headers", "transport", "head", "key")

    def __init__(self, url: httpx.URL, headers: httpx.Headers, transport: DeadlineTransport | None,
                 head: bytes | None):
        self.url, self.headers, self.transport, self.head = url, headers, transport, head
        self.key = (url.host, url.port or 80)


async def _read_body(lean: LeanTransport, key, conn: _Conn, length: int | None, chunked: bool,
                     keep_alive: bool, max_bytes: int) -> bytes:
    """The whole body on ``conn`` (capped at ``max_bytes``), the connection then back in the pool
    (or closed): what reading a :class:`_Body` under :class:`_DeadlineBody` gives."""
    too_large = f"response body above the cap of {max_bytes} bytes (max_response_bytes)"
    if length is not None and not chunked:
        if length > max_bytes:
            raise ResponseTooLarge(too_large)
        try:
            body = await conn.reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError("connection closed before the end of the body") from None
        except (ConnectionError, ValueError) as e:
            raise httpx.ReadError(f"{type(e).__name__}: {e}") from None
        if keep_alive:
            lean._release(key, conn)
        else:
            conn.close()
        return body
    stream = _Body(lean, key, conn, length, chunked, keep_alive, None)
    parts, seen = [], 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > max_bytes:
            raise ResponseTooLarge(too_large)
        parts.append(chunk)
    await stream.aclose()  # back to the pool when read to the end and keep-alive
    return b"".join(parts)
