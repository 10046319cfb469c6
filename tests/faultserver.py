"""A misbehaving OpenAI-compatible backend for the fault-injection tests (pure ASGI, run under
uvicorn on loopback with :class:`caproute.serve.testing.UvicornThread`).

Each request's ``model`` field picks its behaviour through ``FaultServer.modes`` (model id -> mode;
default ``ok``), so a test can turn one pool model bad while the others answer:

==================  ===============================================================================
``ok``              a valid answer (JSON, or SSE chunks ending with ``[DONE]``)
``trickle``         a valid answer sent one byte every ``trickle_s`` (headers at once)
``ping``            ``: ping`` SSE comments every ``trickle_s``, forever (OpenRouter while queued)
``hang``            accepts the request and never sends a byte
``slow_first``      waits ``slow_s`` before the headers, then answers ``ok``
``500``             HTTP 500 with an error body
``garbage``         HTTP 200, ``application/json``, a body that is not JSON
``error200``        HTTP 200 whose body is an error object (no choices)
``usage_string``    a 200 answer whose ``usage`` is a string
``usage_negative``  ... whose ``completion_tokens`` is -5
``usage_huge``      ... whose ``completion_tokens`` is 10**30
``usage_details``   ... whose ``prompt_tokens_details`` is a list
``content_int``     ... whose message ``content`` is an integer
``truncated``       a stream that sends one content chunk and closes (no finish_reason, no [DONE])
``stall``           a stream that sends one content chunk, then nothing until the client leaves
``delay``           waits ``delay_s`` (a service time), then answers ``ok``
``split_emoji``     text with an emoji whose UTF-16 surrogate pair is split: across two stream
                    chunks (``"\\ud83d"`` then ``"\\ude00"``), and a lone ``"\\ud800"`` in a
                    non-stream answer (what a tokenizer that emits half a character sends)
==================  ===============================================================================

:class:`RawBackend` is the same idea below HTTP: a socket server that answers every request with
the raw bytes of a fault in :data:`RAW_FAULTS` (malformed status line, headers, chunking, or a body
beyond any cap), picked by the request's ``model`` field, for faults uvicorn cannot produce.

``active`` counts requests whose handler still runs (a backend connection the proxy left open keeps
it above zero until the client side closes), ``disconnects`` the ones that ended because the
client went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time

from caproute.serve.echo import lifespan, read_body

ANSWER = "Four."
MODES = (
    "ok",
    "trickle",
    "ping",
    "hang",
    "slow_first",
    "500",
    "garbage",
    "error200",
    "usage_string",
    "usage_negative",
    "usage_huge",
    "usage_details",
    "content_int",
    "truncated",
    "stall",
    "delay",
    "split_emoji",
)
SPLIT_EMOJI = ("Hi \ud83d", "\ude00!")  # one emoji, its surrogate pair split over two chunks
BAD_USAGE = {
    "usage_string": "lots",
    "usage_negative": {"prompt_tokens": 3, "completion_tokens": -5, "total_tokens": -2},
    "usage_huge": {"prompt_tokens": 3, "completion_tokens": 10**30, "total_tokens": 10**30},
    "usage_details": {"prompt_tokens": 3, "completion_tokens": 2, "prompt_tokens_details": [1, 2]},
}


class FaultServer:
    def __init__(self, trickle_s: float = 0.3, slow_s: float = 3.0, delay_s: float = 0.2):
        self.modes: dict[str, str] = {}
        self.trickle_s, self.slow_s, self.delay_s = trickle_s, slow_s, delay_s
        self.active = 0
        self.active_by_model: dict[str, int] = {}
        self.max_active_by_model: dict[str, int] = {}
        self.disconnects = 0
        self.requests: list[tuple[str, str, bool]] = []  # (model, mode, stream)
        self._lock = threading.Lock()

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """True once no handler runs any more (every backend connection was closed)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.active == 0:
                return True
            time.sleep(0.02)
        return self.active == 0

    # -- ASGI ---------------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        body = await read_body(receive)
        try:
            req = json.loads(body or b"{}")
        except json.JSONDecodeError:
            req = {}
        model = str(req.get("model", ""))
        mode = self.modes.get(model, "ok")
        stream = bool(req.get("stream"))
        with self._lock:
            self.requests.append((model, mode, stream))
            self.active += 1
            k = self.active_by_model[model] = self.active_by_model.get(model, 0) + 1
            self.max_active_by_model[model] = max(self.max_active_by_model.get(model, 0), k)
        gone = asyncio.Event()

        async def watch():
            while True:
                m = await receive()
                if m["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())
        try:
            await self._answer(mode, model, stream, send, gone)
        finally:
            watcher.cancel()
            with self._lock:
                self.active -= 1
                self.active_by_model[model] -= 1
                if gone.is_set():
                    self.disconnects += 1

    async def _answer(self, mode, model, stream, send, gone: asyncio.Event):
        if mode == "hang":
            await gone.wait()
            return
        if mode == "delay":
            await asyncio.sleep(self.delay_s)
            mode = "ok"
        if mode == "slow_first":
            try:
                await asyncio.wait_for(gone.wait(), self.slow_s)
                return
            except TimeoutError:
                mode = "ok"
        if mode == "500":
            return await _send(send, 500, b'{"error":{"message":"injected 500","type":"server_error"}}')
        if mode == "garbage":
            return await _send(send, 200, b"<html>definitely not json")
        if mode == "error200":
            return await _send(send, 200, b'{"error":{"message":"injected error in a 200","code":500}}')
        if mode == "ping":
            await send(_start(200, b"text/event-stream"))
            while not gone.is_set():
                await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), self.trickle_s)
            return
        if mode == "split_emoji":
            if stream:
                chunks = [_sse({"role": "assistant", "content": SPLIT_EMOJI[0]}, model),
                          _sse({"content": SPLIT_EMOJI[1]}, model), _sse({}, model, "stop"), b"data: [DONE]\n\n"]
                await send(_start(200, b"text/event-stream"))
                return await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": False})
            out = _completion(model)
            out["choices"][0]["message"]["content"] = "".join(SPLIT_EMOJI) + " \ud800"
            return await _send(send, 200, json.dumps(out).encode())
        if stream:
            chunks = _stream_chunks(model, truncated=mode in ("truncated", "stall"))
            payload = b"".join(chunks)
            if mode in ("truncated", "stall"):
                await send(_start(200, b"text/event-stream"))
                await send({"type": "http.response.body", "body": chunks[0], "more_body": True})
                if mode == "stall":
                    await gone.wait()
                    return
                await asyncio.sleep(0.05)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if mode in BAD_USAGE or mode == "content_int":
                payload = b"".join(_stream_chunks(model, bad=mode))
            if mode == "trickle":
                return await self._trickle(send, payload, b"text/event-stream", gone)
            await send(_start(200, b"text/event-stream"))
            await send({"type": "http.response.body", "body": payload, "more_body": False})
            return
        out = _completion(model, bad=mode)
        payload = json.dumps(out).encode()
        if mode == "trickle":
            return await self._trickle(send, payload, b"application/json", gone, length=True)
        return await _send(send, 200, payload)

    async def _trickle(self, send, payload: bytes, ctype: bytes, gone: asyncio.Event, length: bool = False):
        start = _start(200, ctype)
        if length:
            start["headers"].append((b"content-length", str(len(payload)).encode()))
        await send(start)
        for i in range(len(payload)):
            if gone.is_set():
                return
            await send({"type": "http.response.body", "body": payload[i : i + 1], "more_body": True})
            try:
                await asyncio.wait_for(gone.wait(), self.trickle_s)
                return
            except TimeoutError:
                pass
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _start(status: int, ctype: bytes) -> dict:
    return {"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]}


async def _send(send, status: int, body: bytes) -> None:
    start = _start(status, b"application/json")
    start["headers"].append((b"content-length", str(len(body)).encode()))
    await send(start)
    await send({"type": "http.response.body", "body": body})


def _completion(model: str, bad: str = "ok") -> dict:
    content = 4 if bad == "content_int" else ANSWER
    usage = BAD_USAGE.get(bad, {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    return {
        "id": "fault-1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }


def _stream_chunks(model: str, truncated: bool = False, bad: str = "ok") -> list[bytes]:
    def chunk(delta, finish=None, **extra):
        c = {
            "id": "fault-1",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return b"data: " + json.dumps(c).encode() + b"\n\n"

    if truncated:
        return [chunk({"role": "assistant", "content": "Fo"})]
    out = [chunk({"role": "assistant", "content": ANSWER[:2]}), chunk({"content": ANSWER[2:]})]
    if bad == "content_int":
        out.append(chunk({"content": 4}))
    last_usage = BAD_USAGE.get(bad, {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    out.append(chunk({}, "stop", usage=last_usage))
    out.append(b"data: [DONE]\n\n")
    return out


def _sse(delta: dict, model: str, finish: str | None = None) -> bytes:
    c = {"id": "fault-1", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(c).encode() + b"\n\n"


# -- below HTTP: raw answers uvicorn would never send -------------------------------------------------

def _ok_body() -> bytes:
    return json.dumps(_completion("raw")).encode()


RAW_FAULTS = {
    "bad_length": lambda: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n"
    + _ok_body(),
    "two_lengths": lambda: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n" + _ok_body(),
    "bad_status": lambda: b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\n{}",
    "not_http": lambda: b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "bad_header": lambda: b"HTTP/1.1 200 OK\r\nthis line has no colon\r\nContent-Length: 2\r\n\r\n{}",
    "bad_chunk_size": lambda: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "chunk_no_crlf": lambda: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
    "chunk_hex_prefix": lambda: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
    "huge_declared": lambda: b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + _ok_body(),
    "huge_chunk": lambda: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffff\r\n" + b"x" * 70000,
    "gzip": lambda: b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nxxxx",
}
RAW_HUGE_UNTIL_CLOSE = "huge_until_close"  # no length, 1 MiB pieces until the client hangs up


class RawBackend:
    """A loopback socket server: each connection reads one request and answers the raw bytes of
    ``RAW_FAULTS[fault]`` (or 1 MiB pieces until the client hangs up for :data:`RAW_HUGE_UNTIL_CLOSE`),
    then closes. ``fault`` is the attribute when set, else the request's ``model``; ``sent``
    counts the bytes written for the huge answer."""

    def __init__(self):
        self.fault: str | None = None
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    return
                data += more
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:])
                           if k.strip().lower() == b"content-length"), 0)
            while len(body) < length:
                body += conn.recv(65536)
            model = self.fault or str(json.loads(body or b"{}").get("model", ""))
            if model == RAW_HUGE_UNTIL_CLOSE:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
                piece = b" " * (1 << 20)
                while True:
                    conn.sendall(piece)
                    self.sent += len(piece)
            conn.sendall(RAW_FAULTS[model]())

    def stop(self) -> None:
        self._stop = True
        self.sock.close()
