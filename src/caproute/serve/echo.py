"""A constant-time OpenAI-compatible backend: the yardstick for the proxy's own overhead.

It answers ``POST /v1/chat/completions`` (stream and non-stream) with a fixed short answer and
real token counts of that answer, and ``GET /v1/models``. A request with ``tools`` (and a
``tool_choice`` other than ``none``) is answered with one call of its first (or chosen) tool,
arguments ``{"echo": <the last message's text>}``, finish reason ``tool_calls``. ``fail_status`` makes it answer every
completion with that HTTP status (a real failing server for fallback tests); ``delay_s`` adds a
constant service time. Pure ASGI, no framework, so it adds as little as possible to what it
measures. Run it with ``python -m caproute.serve.echo --port P --model NAME``.
"""

from __future__ import annotations

import asyncio
import json
import time

ANSWER = "Four."


async def lifespan(receive, send) -> None:
    """A bare ASGI app's lifespan: acknowledge startup and shutdown, return at shutdown."""
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive) -> bytes:
    """The whole body of an ASGI HTTP request."""
    body = b""
    more = True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    return body


def echo_app(
    model: str = "echo", *, fail_status: int | None = None, delay_s: float = 0.0, answer: str = ANSWER
):
    models_body = json.dumps(
        {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "echo"}]}
    ).encode()

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        body = await read_body(receive)
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/v1/models":
            return await _send(send, 200, models_body)
        if method != "POST" or path != "/v1/chat/completions":
            return await _send(send, 404, b'{"error":{"message":"not found","type":"not_found_error"}}')
        if delay_s:
            await asyncio.sleep(delay_s)
        if fail_status is not None:
            return await _send(
                send,
                fail_status,
                json.dumps(
                    {
                        "error": {
                            "message": f"echo backend configured to fail with {fail_status}",
                            "type": "server_error",
                        }
                    }
                ).encode(),
            )
        try:
            req = json.loads(body)
        except json.JSONDecodeError:
            return await _send(
                send, 400, b'{"error":{"message":"invalid JSON","type":"invalid_request_error"}}'
            )
        created = int(time.time())
        call = _tool_call(req)
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in req.get("messages", [])) // 4 + 1
        if req.get("stream") and call is not None:
            return await _stream_tool_call(send, model, created, call)
        if req.get("stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            for i, word in enumerate([answer[: len(answer) // 2], answer[len(answer) // 2 :]]):
                delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
                chunk = {
                    "id": "echo-1",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                }
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                        "more_body": True,
                    }
                )
            last = {
                "id": "echo-1",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n",
                    "more_body": False,
                }
            )
            return
        message = {"role": "assistant", "content": answer}
        if call is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        out = {
            "id": "echo-1",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": "stop" if call is None else "tool_calls"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": 2,
                "total_tokens": prompt_tokens + 2,
            },
        }
        return await _send(send, 200, json.dumps(out).encode())

    return app


def _tool_call(req: dict) -> dict | None:
    """The one tool call the echo answers a request with tools with (None: answer text)."""
    tools, choice = req.get("tools"), req.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    name = (tools[0].get("function") or {}).get("name", "")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name", name)
    last = (req.get("messages") or [{}])[-1].get("content")
    text = last if isinstance(last, str) else json.dumps(last)
    return {"id": "call_echo1", "type": "function", "function": {"name": name, "arguments": json.dumps({"echo": text})}}


async def _stream_tool_call(send, model: str, created: int, call: dict) -> None:
    args = call["function"]["arguments"]
    deltas = [
        {"role": "assistant", "tool_calls": [{"index": 0, **call, "function": {"name": call["function"]["name"], "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": args[: len(args) // 2]}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": args[len(args) // 2 :]}}]},
    ]
    body = b""
    for i, delta in enumerate([*deltas, {}]):
        chunk = {
            "id": "echo-1",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": "tool_calls" if i == len(deltas) else None}],
        }
        body += b"data: " + json.dumps(chunk).encode() + b"\n\n"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": body + b"data: [DONE]\n\n"})


async def _send(send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import argparse

    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default="echo")
    ap.add_argument("--fail-status", type=int, default=None)
    ap.add_argument("--delay-s", type=float, default=0.0)
    a = ap.parse_args()
    uvicorn.run(
        echo_app(a.model, fail_status=a.fail_status, delay_s=a.delay_s),
        host=a.host,
        port=a.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
