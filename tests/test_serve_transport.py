"""The lean httpx transport against real sockets: the echo backend under uvicorn (content-length and
chunked bodies) and raw asyncio servers for the edge cases (close-delimited body, a server that drops
idle keep-alive connections, one that never answers, a refused port)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from caproute.core.http import LeanTransport
from caproute.serve.echo import ANSWER, echo_app
from caproute.serve.testing import UvicornThread, free_port


@pytest.fixture(scope="module")
def echo():
    with UvicornThread(echo_app("m")) as s:
        yield s


async def _both(url: str, method: str, **kw):
    out = []
    for transport in (LeanTransport(), httpx.AsyncHTTPTransport()):
        async with httpx.AsyncClient(transport=transport) as c:
            r = await c.request(method, url, **kw)
            out.append((r.status_code, r.headers.get("content-type"), r.content))
    return out


def test_same_answers_as_httpx_default_transport(echo):
    async def main():
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        a, b = await _both(echo.base_url + "/v1/chat/completions", "POST", json=chat)
        assert a[:2] == b[:2] == (200, "application/json")
        assert json.loads(a[2])["choices"] == json.loads(b[2])["choices"]
        a, b = await _both(echo.base_url + "/v1/models", "GET")
        assert a == b
        a, b = await _both(echo.base_url + "/nope", "GET")
        assert a == b and a[0] == 404

    asyncio.run(main())


def test_chunked_stream_and_connection_reuse(echo):
    async def main():
        t = LeanTransport()
        async with httpx.AsyncClient(transport=t) as c:
            for _ in range(3):
                async with c.stream(
                    "POST",
                    echo.base_url + "/v1/chat/completions",
                    json={"model": "m", "stream": True, "messages": []},
                ) as r:
                    assert r.headers["transfer-encoding"] == "chunked"
                    lines = [ln async for ln in r.aiter_lines() if ln]
                text = "".join(
                    json.loads(ln[6:])["choices"][0]["delta"].get("content", "")
                    for ln in lines
                    if ln != "data: [DONE]"
                )
                assert text == ANSWER and lines[-1] == "data: [DONE]"
            assert sum(len(v) for v in t._idle.values()) == 1  # one connection, reused

    asyncio.run(main())


async def _raw_server(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")), 0
    )
    return head, await reader.readexactly(length)


def test_close_delimited_body():
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nhello ")
        await writer.drain()
        writer.write(b"world")
        writer.close()

    async def main():
        server, port = await _raw_server(handler)
        t = LeanTransport()
        async with httpx.AsyncClient(transport=t) as c:
            r = await c.post(f"http://127.0.0.1:{port}/x", content=b"abc")
            assert r.text == "hello world" and not t._idle.get(("127.0.0.1", port))
        server.close()

    asyncio.run(main())


def test_stale_keepalive_connection_is_retried_once():
    served = []

    async def handler(reader, writer):  # answers one request per connection, then drops it silently
        _, body = await _read_request(reader)
        served.append(body)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main():
        server, port = await _raw_server(handler)
        async with httpx.AsyncClient(transport=LeanTransport()) as c:
            for i in range(3):
                r = await c.post(f"http://127.0.0.1:{port}/x", content=str(i).encode())
                assert r.text == "ok"
                await asyncio.sleep(0.05)
        server.close()

    asyncio.run(main())
    assert served == [b"0", b"1", b"2"]  # each request reached the server exactly once


def test_timeouts_and_refused_connections():
    async def silent(reader, writer):
        await asyncio.sleep(5)

    async def main():
        server, port = await _raw_server(silent)
        async with httpx.AsyncClient(transport=LeanTransport()) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.post(f"http://127.0.0.1:{port}/x", content=b"{}", timeout=0.3)
            with pytest.raises(httpx.ConnectError):
                await c.post(f"http://127.0.0.1:{free_port()}/x", content=b"{}", timeout=2)
            with pytest.raises(httpx.UnsupportedProtocol):
                await LeanTransport().handle_async_request(httpx.Request("GET", "https://example.com/"))
        server.close()

    asyncio.run(main())


def test_truncated_body_is_an_error():
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly a part")
        await writer.drain()
        writer.close()

    async def main():
        server, port = await _raw_server(handler)
        async with httpx.AsyncClient(transport=LeanTransport()) as c:
            with pytest.raises(httpx.RemoteProtocolError):
                await c.post(f"http://127.0.0.1:{port}/x", content=b"{}")
        server.close()

    asyncio.run(main())


def test_request_dropped_on_a_reused_connection_is_sent_again_on_a_new_one():
    seen = []

    async def handler(reader, writer):  # answers the first request of a connection, drops the second
        _, body = await _read_request(reader)
        seen.append(body)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        _, body = await _read_request(reader)
        seen.append(b"dropped " + body)
        writer.close()

    async def main():
        server, port = await _raw_server(handler)
        async with httpx.AsyncClient(transport=LeanTransport()) as c:
            assert (await c.post(f"http://127.0.0.1:{port}/x", content=b"a")).text == "ok"
            assert (await c.post(f"http://127.0.0.1:{port}/x", content=b"b")).text == "ok"
        server.close()

    asyncio.run(main())
    assert seen == [b"a", b"dropped b", b"b"]


def test_deadline_transport_total_and_first_byte_deadlines():
    """A server that trickles its body one byte every 0.1 s never trips a per-read timeout; the
    total deadline cuts it, on both inner transports, and the connection is closed (not pooled)."""
    from caproute.core.http import Deadline, DeadlineExceeded, DeadlineTransport

    closed = []

    async def trickle(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        try:
            for _ in range(1000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass
        closed.append(True)

    async def slow_head(reader, writer):
        await _read_request(reader)
        await asyncio.sleep(2.0)
        writer.close()

    async def main():
        server, port = await _raw_server(trickle)
        slow, slow_port = await _raw_server(slow_head)
        try:
            for inner in (LeanTransport(), httpx.AsyncHTTPTransport()):
                t = DeadlineTransport(inner, Deadline(total_s=0.6))
                async with httpx.AsyncClient(transport=t) as c:
                    start = asyncio.get_running_loop().time()
                    with pytest.raises(DeadlineExceeded) as e:
                        await c.get(f"http://127.0.0.1:{port}/")
                    took = asyncio.get_running_loop().time() - start
                    assert e.value.phase == "total" and 0.5 <= took < 1.5
            for _ in range(40):
                if len(closed) == 2:
                    break
                await asyncio.sleep(0.05)
            assert len(closed) == 2  # the server saw both connections closed
            t = DeadlineTransport(LeanTransport(), Deadline(total_s=30.0, first_byte_s=0.3))
            async with httpx.AsyncClient(transport=t) as c:
                with pytest.raises(DeadlineExceeded, match="first byte deadline") as e:
                    await c.get(f"http://127.0.0.1:{slow_port}/")
                assert e.value.phase == "first_byte"
        finally:
            server.close()
            slow.close()

    asyncio.run(main())
