"""gateway.FastLane by hand: the plain case goes to the handler, everything else reaches the inner
app with the body exactly as the client sent it, and a body-limit error is the route's error."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from caproute.serve.echo import read_body
from caproute.serve.errors import ApiError
from caproute.serve.gateway import BodyTooLarge, FastLane


class Body(BaseModel):
    n: int


def run(lane: FastLane, body_parts: list[bytes], headers=None, method="POST", path="/x"):
    messages = [
        {"type": "http.request", "body": b, "more_body": i < len(body_parts) - 1} for i, b in enumerate(body_parts)
    ]
    sent = []

    async def receive():
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or [], "query_string": b""}
    asyncio.run(lane(scope, receive, send))
    return sent


def make():
    seen = {"inner": [], "handler": []}

    async def inner(scope, receive, send):
        seen["inner"].append(await read_body(receive))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})

    async def handler(body, request):
        from starlette.responses import JSONResponse

        seen["handler"].append(body.n)
        if body.n < 0:
            raise ApiError(404, "negative")
        return JSONResponse({"n": body.n * 2})

    def on_error(request, err):
        from starlette.responses import JSONResponse

        return JSONResponse(err.body(), status_code=err.status)

    return FastLane(inner, {"/x": (Body, handler)}, on_error), seen


def test_plain_json_goes_to_the_handler():
    lane, seen = make()
    sent = run(lane, [b'{"n"', b": 21}"], headers=[(b"content-type", b"application/json; charset=utf-8")])
    assert seen == {"inner": [], "handler": [21]}
    assert sent[0]["status"] == 200 and sent[1]["body"] == b'{"n":42}'


def test_everything_else_reaches_the_inner_app_with_the_same_body():
    for parts, headers, method, path in [
        ([b'{"n": "x"}'], [], "POST", "/x"),                                   # validation error
        ([b'{"n": 1'], [], "POST", "/x"),                                      # bad JSON
        ([b"[1]"], [], "POST", "/x"),                                          # not an object
        ([b""], [], "POST", "/x"),                                             # no body
        ([b"\xff\xfe{"], [], "POST", "/x"),                                    # not UTF-8
        ([b'{"n": 1}'], [(b"content-type", b"text/plain")], "POST", "/x"),     # another content type
        ([b'{"n": 1}'], [], "PUT", "/x"),                                      # another method
        ([b'{"n": 1}'], [], "POST", "/y"),                                     # another path
    ]:
        lane, seen = make()
        sent = run(lane, parts, headers, method, path)
        assert seen == {"inner": [b"".join(parts)], "handler": []}, (parts, headers, method, path)
        assert sent[0]["status"] == 299


def test_api_errors_are_the_routes_errors():
    lane, seen = make()
    sent = run(lane, [b'{"n": -1}'])
    assert seen["handler"] == [-1] and sent[0]["status"] == 404 and b"negative" in sent[1]["body"]

    async def too_big():
        raise BodyTooLarge(10)

    lane, seen = make()
    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b""}
    asyncio.run(lane(scope, too_big, send))
    assert seen == {"inner": [], "handler": []} and sent[0]["status"] == 413


def test_an_error_while_the_response_is_sent_goes_on_to_the_gateway():
    """The lane answers the handler's ApiError; one raised while its response is being sent (a
    stream's, after its start) is not the lane's to answer: it propagates (the gateway answers it
    where nothing was sent yet, else the server ends the response)."""
    sent = []

    class Breaks:
        async def __call__(self, scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise ApiError(502, "broke mid-stream")

    async def handler(body, request):
        return Breaks()

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b'{"n": 1}', "more_body": False}

    lane = FastLane(None, {"/x": (Body, handler)}, lambda request, err: None)
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b""}
    with pytest.raises(ApiError, match="mid-stream"):
        asyncio.run(lane(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start"]
