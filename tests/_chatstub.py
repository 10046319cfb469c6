"""The one stub OpenAI-compatible chat endpoint of the tests, on loopback: a test computes each
reply from the request body (``reply(body)``), so collections against models and judges are
scripted exactly. Every request body is kept (``requests``, under ``lock``) in arrival order.

``reply(body)`` returns the assistant's text (one choice, ``usage`` tokens), or a :class:`Raw`
answer sent as is (an error status, several choices, no usage, extra headers)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Raw:
    """An answer sent as is: HTTP ``status``, JSON ``body`` and extra ``headers``."""

    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)


def completion(model: str, texts: list[str], usage: tuple[int, int] | None = (10, 10)) -> dict:
    """A chat.completion body: one choice per text; ``usage`` = (prompt, completion) tokens or None."""
    out = {"id": "x", "object": "chat.completion", "created": 0, "model": model,
           "choices": [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": t}}
                       for i, t in enumerate(texts)]}
    if usage is not None:
        out["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    return out


def pool_model(name: str, url: str, *, timeout_s: float = 10, max_concurrency: int = 2) -> dict:
    """A pool YAML model entry for ``name`` at ``url`` (no key; $1 / $2 per million in / out tokens)."""
    return {"name": name, "base_url": url, "model": name, "api_key_env": "", "price_input_per_1m": 1.0,
            "price_output_per_1m": 2.0, "max_concurrency": max_concurrency, "timeout_s": timeout_s}


class ChatStub:
    """``with ChatStub(reply) as stub:`` serves ``POST .../chat/completions`` at ``stub.url``
    (``close()`` stops it too). ``usage``: the tokens a text reply reports; ``delay_s``: each
    answer waits this long (a slow endpoint)."""

    def __init__(self, reply: Callable[[dict], str | Raw], *, usage: tuple[int, int] = (10, 10),
                 delay_s: float = 0.0):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                if delay_s:
                    time.sleep(delay_s)
                out = reply(body)
                if not isinstance(out, Raw):
                    out = Raw(200, completion(body["model"], [out], usage))
                payload = json.dumps(out.body).encode()
                self.send_response(out.status)
                for k, v in out.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/v1"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()

    def __enter__(self) -> ChatStub:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
