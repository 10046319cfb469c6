"""DirectSender.post (core/http.py): the proxy's non-streaming backend exchange without httpx's
request and response objects must put the same bytes on the wire and give back the same status,
body or exception (type and message) as ``fetch(request(...))`` through the same transports, and
keep the connection pool as that path does."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from caproute.core.http import Deadline, DeadlineExceeded, DirectSender, ResponseTooLarge, make_mounts

CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
ANSWERS = {
    "plain": b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\nx: y\r\n\r\nhello",
    "empty": b"HTTP/1.1 204 No Content\r\n\r\n",
    "chunked": CHUNKED,
    "close": b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
    "declared_big": b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n" + b"x" * 500,
    "chunked_big": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n65\r\n" + b"y" * 101 + b"\r\n0\r\n\r\n",
    "gzip": b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 2\r\n\r\nzz",
    "truncated": b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
    "bad_status": b"HTTP/2 200 OK\r\n\r\n",
    "bad_length": b"HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\nabc",
    "bad_chunk": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
}


async def _server(seen: list):
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(ln.split(b":")[1]) for ln in head.split(b"\r\n")
                              if ln.lower().startswith(b"content-length"))
                body = await reader.readexactly(length)
                seen.append(head + body)
                kind = head.split(b" ")[1].rsplit(b"/", 1)[1].decode()
                if kind.startswith("slow_head"):
                    await asyncio.sleep(0.5)
                if kind.startswith("slow_body"):
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab")
                    await writer.drain()
                    await asyncio.sleep(0.5)
                    writer.write(b"cdefghij")
                else:
                    writer.write(ANSWERS.get(kind, ANSWERS["plain"]))
                await writer.drain()
                if kind in ("close", "truncated", "bad_status", "bad_length", "bad_chunk") or "body" in kind:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _outcome(aw):
    try:
        return await aw
    except httpx.HTTPError as e:
        return type(e), str(e)


@pytest.mark.parametrize("kind", [*ANSWERS, "slow_head", "slow_body", "slow_head_total", "slow_body_in_time"])
def test_post_gives_what_fetch_gives(kind):
    async def main():
        seen: list[bytes] = []
        server, port = await _server(seen)
        d = DirectSender(make_mounts(max_response_bytes=100))
        url = httpx.URL(f"http://127.0.0.1:{port}/v1/{kind}")
        headers = d.headers({"content-type": "application/json", "authorization": "Bearer k"})
        target = d.target(url, headers)
        assert target.transport is not None  # the lean path serves it
        deadline = (Deadline(total_s=0.3) if kind == "slow_head_total" else
                    # the head is in time, the body comes after the first-byte bound, before the total
                    Deadline(total_s=2.0, first_byte_s=0.2) if kind == "slow_body_in_time" else
                    Deadline(total_s=0.3, first_byte_s=0.2) if kind.startswith("slow") else None)
        ext = None if deadline is None else {"caproute.deadline": deadline}
        want = await _outcome(d.fetch(d.request("POST", url, content=b'{"a":1}', headers=headers, extensions=ext)))
        got = await _outcome(d.post(target, b'{"a":1}', deadline))
        await d.aclose()
        server.close()
        return want, got, seen

    want, got, seen = asyncio.run(main())
    assert got == want
    assert seen[0] == seen[1]  # the same request bytes on the wire
    expected = {"plain": (201, b"hello"), "empty": (204, b""), "chunked": (200, b"abcde"),
                "close": (200, b"until the end"), "declared_big": ResponseTooLarge,
                "chunked_big": ResponseTooLarge, "gzip": httpx.RemoteProtocolError,
                "truncated": httpx.RemoteProtocolError, "bad_status": httpx.RemoteProtocolError,
                "bad_length": httpx.RemoteProtocolError, "bad_chunk": httpx.RemoteProtocolError,
                "slow_head": DeadlineExceeded, "slow_body": DeadlineExceeded,
                "slow_head_total": DeadlineExceeded, "slow_body_in_time": (200, b"abcdefghij")}[kind]
    assert got == expected if isinstance(expected, tuple) else got[0] is expected
    if kind.startswith("slow") and kind != "slow_body_in_time":  # which deadline: the head's (first byte or total) or the body's
        assert got[1].startswith("no response headers" if "head" in kind else "response not complete")
        assert ("first byte" in got[1]) == (kind == "slow_head")


def test_post_reuses_one_keepalive_connection_and_falls_back_where_not_lean():
    async def main():
        seen: list[bytes] = []
        server, port = await _server(seen)
        d = DirectSender(make_mounts(max_response_bytes=100))
        target = d.target(httpx.URL(f"http://127.0.0.1:{port}/v1/plain"), d.headers({}))
        for _ in range(3):
            assert await d.post(target, b"{}", None) == (201, b"hello")
        pooled = sum(len(v) for v in d.mounts["http://"].inner._idle.values())
        close = d.target(httpx.URL(f"http://127.0.0.1:{port}/v1/close"), d.headers({}))
        assert await d.post(close, b"{}", None) == (200, b"until the end")
        after = sum(len(v) for v in d.mounts["http://"].inner._idle.values())
        # not lean: httpx's own transport, or a caller's accept-encoding
        slow = DirectSender(make_mounts(lean=False, max_response_bytes=100))
        t2 = slow.target(httpx.URL(f"http://127.0.0.1:{port}/v1/plain"), slow.headers({}))
        t3 = d.target(httpx.URL(f"http://127.0.0.1:{port}/v1/plain"), d.headers({"accept-encoding": "gzip"}))
        fallback = (t2.transport, t3.transport, await slow.post(t2, b"{}", None))
        await d.aclose()
        await slow.aclose()
        server.close()
        return pooled, after, fallback

    pooled, after, fallback = asyncio.run(main())
    assert (pooled, after) == (1, 0)  # kept and reused; dropped after the close-delimited answer
    assert fallback == (None, None, (201, b"hello"))
