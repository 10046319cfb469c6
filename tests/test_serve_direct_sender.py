"""DirectSender (core/http.py): the proxy's requests to its backends without AsyncClient.send.

It must put the same request on the wire as ``make_client(...).build_request`` + ``send`` and give
back the same status and body; it keeps no cookie jar."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from caproute.core.http import DirectSender, make_client

URL = "http://127.0.0.1:9/v1/chat/completions"


def test_request_carries_the_clients_headers_in_order():
    client = make_client()
    want = client.build_request("POST", URL, content=b'{"a":1}', headers={"content-type": "application/json",
                                                                           "authorization": "Bearer k"})
    d = DirectSender({})
    got = d.request("POST", httpx.URL(URL), content=b'{"a":1}',
                    headers=d.headers({"content-type": "application/json", "authorization": "Bearer k"}),
                    extensions={"x": 1})
    assert got.headers.raw == want.headers.raw
    assert got.extensions == {**want.extensions, "x": 1}
    assert (got.method, str(got.url), got.content) == (want.method, str(want.url), want.content)
    asyncio.run(client.aclose())


def _sender(seen: list) -> DirectSender:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/gz":
            import gzip

            return httpx.Response(200, headers={"content-encoding": "gzip"}, content=gzip.compress(b"zipped"))
        return httpx.Response(201, headers={"set-cookie": "s=1"}, content=b"body " + request.content)

    return DirectSender({"http://": httpx.MockTransport(handler)})


def test_send_and_fetch_give_status_and_body_and_keep_no_cookies():
    seen: list[httpx.Request] = []
    d = _sender(seen)

    async def go():
        h = d.headers({})
        r = await d.send(d.request("POST", httpx.URL("http://b/x"), content=b"1", headers=h))
        status, body = await d.fetch(d.request("POST", httpx.URL("http://b/x"), content=b"2", headers=h))
        zipped = await d.fetch(d.request("GET", httpx.URL("http://b/gz"), content=b"", headers=h))
        return r, status, body, zipped

    r, status, body, zipped = asyncio.run(go())
    assert (r.status_code, r.content, r.request is seen[0]) == (201, b"body 1", True)
    assert (status, body) == (201, b"body 2")
    assert zipped == (200, b"zipped")  # a compressed body still comes back decoded (httpx's decoder)
    assert all("cookie" not in req.headers for req in seen)  # a backend's Set-Cookie is not replayed


def test_unknown_scheme_is_httpx_unsupported_protocol():
    d = DirectSender({})
    with pytest.raises(httpx.UnsupportedProtocol):
        asyncio.run(d.send(d.request("GET", httpx.URL("ftp://x/"), content=b"", headers=d.headers({}))))
