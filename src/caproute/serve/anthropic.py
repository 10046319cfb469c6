"""The Anthropic Messages API (``POST /v1/messages``) on caproute's proxy: translation to and from
OpenAI chat completions, which the pool speaks.

A Messages request is validated (:class:`MessagesRequest`), translated to an OpenAI chat request
(:func:`to_openai`: system prompt, text/image/tool_use/tool_result blocks, tools and tool choice)
and routed by :class:`AnthropicChat`, a :class:`~caproute.serve.routed_chat.RoutedChat` whose
answers are Anthropic messages (:func:`to_message`) or Anthropic server-sent events
(:class:`EventStream`: ``message_start``, ``content_block_start``/``delta``/``stop``,
``message_delta``, ``message_stop``; ``error`` when the backend breaks mid-stream). Decision,
fallback, accounting and registration are the chat's own, so the routing is exactly that of
``/v1/chat/completions``; the decision is in the same ``x-caproute-*`` headers and in a
``caproute`` field of the message (``message_start`` for a stream). Errors have Anthropic's
shape (:func:`error_body`).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from caproute.serve.conversation import message_text
from caproute.serve.errors import ApiError
from caproute.serve.routed_chat import CHARS_PER_TOKEN, RoutedChat
from caproute.serve.schemas import CaprouteOptions, _Request

PATH = "/v1/messages"

# HTTP status -> Anthropic error type (https://docs.anthropic.com/en/api/errors)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error body: ``{"type": "error", "error": {"type", "message"}}``."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def from_openai_error(status: int, body: dict) -> dict[str, Any]:
    """An OpenAI-shaped error body (as the proxy writes them) in Anthropic's shape."""
    err = body.get("error") if isinstance(body, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    return error_body(status, str(message or body))


# -- the request --------------------------------------------------------------------------------


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class MessagesRequest(_Request):
    """An Anthropic Messages request (``caproute`` is caproute's own options, as on chat completions)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "model": "caproute",
                    "max_tokens": 64,
                    "system": "Answer briefly.",
                    "messages": [{"role": "user", "content": "What is 2 + 2?"}],
                }
            ]
        },
    )
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int = Field(ge=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = False
    temperature: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    top_p: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(default=None, ge=0)
    metadata: dict[str, Any] | None = None
    tools: list[Tool] | None = None
    tool_choice: dict[str, Any] | None = None
    caproute: CaprouteOptions | None = None


def _text_of(blocks: str | list[dict], where: str) -> str:
    """The text of a string or a list of text blocks (system prompts, tool results)."""
    if isinstance(blocks, str):
        return blocks
    parts = []
    for i, b in enumerate(blocks):
        if b.get("type") != "text":
            raise ApiError(400, f"{where}[{i}]: only text blocks are supported here, got {b.get('type')!r}")
        parts.append(str(b.get("text", "")))
    return "\n".join(parts)


def _image_part(block: dict, where: str) -> dict:
    src = block.get("source") or {}
    if src.get("type") == "base64":
        url = f"data:{src.get('media_type', 'image/png')};base64,{src.get('data', '')}"
    elif src.get("type") == "url":
        url = src.get("url", "")
    else:
        raise ApiError(400, f"{where}: image source type {src.get('type')!r} is not supported (base64 or url)")
    return {"type": "image_url", "image_url": {"url": url}}


def _user_messages(content: str | list[dict], where: str) -> list[dict]:
    """One user turn: tool results become ``tool`` messages (first, as OpenAI requires them right
    after the assistant's calls), the rest one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools, parts = [], []
    for i, b in enumerate(content):
        kind, at = b.get("type"), f"{where}.content[{i}]"
        if kind == "text":
            parts.append({"type": "text", "text": str(b.get("text", ""))})
        elif kind == "image":
            parts.append(_image_part(b, at))
        elif kind == "tool_result":
            inner = b.get("content", "")
            text = _text_of(inner, f"{at}.content") if inner else ""
            if b.get("is_error"):
                text = f"[tool error] {text}"
            tools.append({"role": "tool", "tool_call_id": str(b.get("tool_use_id", "")), "content": text})
        else:
            raise ApiError(400, f"{at}: content block type {kind!r} is not supported in a user turn")
    out = list(tools)
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append(
            {"role": "user", "content": "\n".join(p["text"] for p in parts) if only_text else parts}
        )
    return out


def _assistant_message(content: str | list[dict], where: str) -> dict:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts, calls = [], []
    for i, b in enumerate(content):
        kind = b.get("type")
        if kind == "text":
            texts.append(str(b.get("text", "")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": str(b.get("id", "")),
                    "type": "function",
                    "function": {"name": str(b.get("name", "")), "arguments": json.dumps(b.get("input", {}))},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the pool's models neither read nor verify another model's thinking
        else:
            raise ApiError(400, f"{where}.content[{i}]: content block type {kind!r} is not supported in an assistant turn")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tool_choice(choice: dict) -> str | dict:
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise ApiError(400, f"tool_choice: type {kind!r} is not one of auto, any, tool (with a name), none", param="tool_choice")


def to_openai(body: MessagesRequest) -> dict[str, Any]:
    """The OpenAI chat request of a Messages request (``top_k``, ``metadata`` other than
    ``user_id`` and Anthropic-only fields are not sent: OpenAI's API has no place for them)."""
    messages: list[dict] = []
    if body.system:
        messages.append({"role": "system", "content": _text_of(body.system, "system")})
    for i, m in enumerate(body.messages):
        where = f"messages[{i}]"
        if m.role == "user":
            messages += _user_messages(m.content, where)
        else:
            messages.append(_assistant_message(m.content, where))
    raw: dict[str, Any] = {"model": body.model, "messages": messages, "max_tokens": body.max_tokens}
    for key in ("temperature", "top_p"):
        if getattr(body, key) is not None:
            raw[key] = getattr(body, key)
    if body.stop_sequences:
        raw["stop"] = body.stop_sequences
    if body.stream:
        raw["stream"] = True
    if body.metadata and body.metadata.get("user_id"):
        raw["user"] = str(body.metadata["user_id"])
    if body.tools:
        raw["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.input_schema,
                },
            }
            for t in body.tools
        ]
    if body.tool_choice is not None:
        raw["tool_choice"] = _tool_choice(body.tool_choice)
        if body.tool_choice.get("disable_parallel_tool_use") and body.tools:
            raw["parallel_tool_calls"] = False
    return raw


# -- the answer ---------------------------------------------------------------------------------


def _tool_input(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments or "{}")
    except (TypeError, json.JSONDecodeError):
        return {"_raw": str(arguments)}  # a model's malformed arguments, kept rather than dropped
    return parsed if isinstance(parsed, dict) else {"_value": parsed}


def usage_of(usage: dict | None, input_estimate: int = 0, output_estimate: int = 0) -> dict[str, int]:
    u = usage or {}
    return {
        "input_tokens": int(u.get("prompt_tokens") or input_estimate),
        "output_tokens": int(u.get("completion_tokens") or output_estimate),
    }


def to_message(data: dict, msg_id: str) -> dict[str, Any]:
    """An OpenAI chat completion (with its ``caproute`` object) as an Anthropic message."""
    choice = (data.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[dict] = []
    text = msg.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    elif msg.get("refusal"):
        content.append({"type": "text", "text": str(msg["refusal"])})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": fn.get("name", ""),
                "input": _tool_input(fn.get("arguments")),
            }
        )
    out = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": data.get("model"),
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage_of(data.get("usage")),
    }
    if "caproute" in data:
        out["caproute"] = data["caproute"]
    return out


def sse(kind: str, data: dict) -> bytes:
    return f"event: {kind}\ndata: ".encode() + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class EventStream:
    """OpenAI stream chunks in, Anthropic events out (one instance per stream).

    Text deltas go to a text block, each tool call to a ``tool_use`` block whose arguments arrive
    as ``input_json_delta``; a block is stopped when another kind (or another tool call) begins.
    """

    def __init__(self, msg_id: str, input_tokens: int = 0):
        self.msg_id, self.input_tokens = msg_id, input_tokens
        self.started = False
        self.index = -1  # the open content block's index (-1: none yet)
        self.open: tuple | None = None  # ("text",) or ("tool", openai tool-call index)
        self.stop_reason = "end_turn"
        self.usage: dict | None = None
        self.n_deltas = 0

    def _start(self, chunk: dict) -> bytes:
        self.started = True
        message = {
            "id": self.msg_id,
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        if "caproute" in chunk:
            message["caproute"] = chunk["caproute"]
        return sse("message_start", {"type": "message_start", "message": message})

    def _open_block(self, key: tuple, block: dict) -> bytes:
        out = self._close_block()
        self.index += 1
        self.open = key
        return out + sse("content_block_start", {"type": "content_block_start", "index": self.index, "content_block": block})

    def _close_block(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def _delta(self, delta: dict) -> bytes:
        self.n_deltas += 1
        return sse("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def chunk(self, chunk: dict) -> bytes:
        out = b"" if self.started else self._start(chunk)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # one message per answer (n > 1 has no Anthropic form)
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.open != ("text",):
                    out += self._open_block(("text",), {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": text})
            for call in delta.get("tool_calls") or []:
                key = ("tool", call.get("index", 0))
                fn = call.get("function") or {}
                if self.open != key:
                    block = {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                        "name": fn.get("name", ""),
                        "input": {},
                    }
                    out += self._open_block(key, block)
                if fn.get("arguments"):
                    out += self._delta({"type": "input_json_delta", "partial_json": fn["arguments"]})
            if choice.get("finish_reason"):
                self.stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return out

    def end(self) -> bytes:
        out = self._close_block()
        usage = usage_of(self.usage, self.input_tokens, self.n_deltas)
        out += sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        return out + sse("message_stop", {"type": "message_stop"})

    def error(self, status: int, message: str) -> bytes:
        return sse("error", error_body(status, message))


# -- the routed chat ----------------------------------------------------------------------------


class AnthropicChat(RoutedChat):
    """A routed chat whose client speaks the Messages API: same decision, attempts, fallback,
    accounting and registration; Anthropic's message and events on the wire."""

    def __init__(self, *args, **kw):
        super().__init__(*args, api="anthropic", **kw)
        self.rid = f"msg_cr{uuid.uuid4().hex}"  # the message id is the response id for feedback
        chars = sum(len(message_text(m.get("content"))) for m in self.raw["messages"])
        self.events = EventStream(self.rid, input_tokens=max(1, chars // CHARS_PER_TOKEN))

    def require_tools(self) -> None:
        """Keep the ranked models whose pool entry accepts tools; a 400 when none does."""
        if "tools" not in self.raw:
            return
        eps = self.state.backends.endpoints
        capable = [m for m in self.order if eps[m].supports_tools]
        if not capable:
            self.trace.failed("tools_not_supported")
            raise ApiError(
                400,
                f"the request has tools but none of the models it may go to ({', '.join(self.order)}) "
                "supports tool use (pool entry 'supports_tools: false'); send it without tools or to "
                "a model that has them",
                param="tools",
                code="tools_not_supported",
            )
        self.order = capable

    def render(self, data: dict) -> dict:
        return to_message(data, self.rid)

    def event(self, chunk: dict) -> bytes:
        return self.events.chunk(chunk)

    def end_events(self) -> bytes:
        return self.events.end()

    def error_event(self, err: dict) -> bytes:
        return self.events.error(502, err["error"]["message"])
