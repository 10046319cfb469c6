"""``POST /v1/messages`` (Anthropic's Messages API) on the proxy, driven by the official
``anthropic`` client against echo backends: routed like chat completions (decision headers,
fallback, feedback on the message id), streaming events in Anthropic's order, system prompts and
content blocks, tool use passed through (and a 400 for a model without tools), ``x-api-key``
and Bearer auth, and errors in Anthropic's shape."""

from __future__ import annotations

import json

import httpx
import pytest

from caproute.serve.anthropic import EventStream, MessagesRequest, to_message, to_openai
from caproute.serve.app import create_app
from caproute.serve.auth import append_key
from caproute.serve.config import ServeConfig
from caproute.serve.echo import ANSWER, echo_app
from caproute.serve.errors import ApiError
from caproute.serve.testing import TEST_MODELS, UvicornThread, train_router, write_pool_yaml

anthropic = pytest.importorskip("anthropic")

ROUTER = "caproute/r"
USER = [{"role": "user", "content": "what is 2 + 2?"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


class Switch:
    """An echo backend that answers 503 while ``failing`` is set (a real failing server)."""

    def __init__(self, name: str):
        self.ok, self.bad = echo_app(name), echo_app(name, fail_status=503)
        self.failing = False

    async def __call__(self, scope, receive, send):
        app = self.bad if self.failing and scope["type"] == "http" else self.ok
        await app(scope, receive, send)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("anthropic")
    switches = {n: Switch(n) for n in TEST_MODELS}
    threads = {n: UvicornThread(s).start() for n, s in switches.items()}
    pool = write_pool_yaml(
        d / "pool.yaml",
        [
            {"name": n, "base_url": t.base_url + "/v1", "model": n, "timeout_s": 10, "supports_tools": n != "small"}
            for n, t in threads.items()
        ],
    )
    key = append_key(d / "keys.txt", "test")
    cfg = ServeConfig(
        routers={"r": train_router(d / "router")}, pool=pool, keys_file=d / "keys.txt", feedback_db=d / "fb.sqlite3"
    )
    with UvicornThread(create_app(cfg)) as srv:
        h = {"authorization": f"Bearer {key}"}
        first = httpx.post(srv.base_url + "/v1/route", json={"model": ROUTER, "messages": USER}, headers=h).json()
        yield {"srv": srv, "key": key, "switches": switches, "first": first["decisions"][0]["model"]}
    for t in threads.values():
        t.stop()


@pytest.fixture(autouse=True)
def _healthy(env):
    for s in env["switches"].values():
        s.failing = False
    yield
    for s in env["switches"].values():
        s.failing = False


def client(env, **kw):
    return anthropic.Anthropic(base_url=env["srv"].base_url, api_key=env["key"], max_retries=0, timeout=30, **kw)


def test_message_routed_with_decision_headers_and_feedback(env):
    raw = client(env).messages.with_raw_response.create(
        model=ROUTER, max_tokens=16, system="Answer briefly.", messages=USER
    )
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == ANSWER
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 2 and msg.usage.input_tokens >= 1
    assert raw.headers["x-caproute-model"] == msg.model == env["first"]
    assert raw.headers["x-caproute-router"] == ROUTER and raw.headers["x-caproute-response-id"] == msg.id
    extra = msg.model_extra["caproute"]
    assert extra["decision"]["model"] == msg.model and extra["fallback"] is False
    assert msg.id.startswith("msg_cr")
    fb = httpx.post(
        env["srv"].base_url + "/v1/feedback",
        json={"response_id": msg.id, "score": 1.0},
        headers={"x-api-key": env["key"]},
    )
    assert fb.status_code == 200, fb.text


def test_stream_events_in_anthropic_order(env):
    with client(env).messages.stream(model=ROUTER, max_tokens=16, messages=USER) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == ANSWER and final.content[0].text == ANSWER and final.stop_reason == "end_turn"
    r = httpx.post(
        env["srv"].base_url + "/v1/messages",
        json={"model": ROUTER, "max_tokens": 16, "messages": USER, "stream": True},
        headers={"x-api-key": env["key"], "anthropic-version": "2023-06-01"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-caproute-model"] == env["first"]
    events = [ln[7:] for ln in r.text.splitlines() if ln.startswith("event: ")]
    assert events == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]
    start = json.loads(r.text.split("data: ", 2)[1].split("\n")[0])
    assert start["message"]["caproute"]["model"] == env["first"]


def test_fallback_when_the_chosen_backend_fails(env):
    env["switches"][env["first"]].failing = True
    for stream in (False, True):
        if stream:
            with client(env).messages.stream(model=ROUTER, max_tokens=8, messages=USER) as s:
                msg = s.get_final_message()
        else:
            msg = client(env).messages.create(model=ROUTER, max_tokens=8, messages=USER)
        assert msg.model != env["first"] and msg.content[0].text == ANSWER
        attempts = msg.model_extra["caproute"]["attempts"]
        assert attempts[0]["model"] == env["first"] and attempts[0]["reason"] == "http_503"


def test_tool_use_passes_through_both_ways(env):
    c = client(env)
    big = "big"  # supports tools
    msg = c.messages.create(
        model=big, max_tokens=32, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER]
    )
    assert msg.stop_reason == "tool_use"
    (use,) = [b for b in msg.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"echo": "Weather in Paris?"}
    with c.messages.stream(
        model=big, max_tokens=32, messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as s:
        final = s.get_final_message()
    (use2,) = [b for b in final.content if b.type == "tool_use"]
    assert use2.input == {"echo": "Weather in Oslo?"} and final.stop_reason == "tool_use"
    # the tool's result goes back as a tool_result block
    follow = c.messages.create(
        model=big,
        max_tokens=32,
        tools=[WEATHER],
        tool_choice={"type": "none"},
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}]},
        ],
    )
    assert follow.content[0].text == ANSWER and follow.stop_reason == "end_turn"
    # routed: only tool-capable models are tried
    routed = c.messages.create(model=ROUTER, max_tokens=32, messages=USER, tools=[WEATHER])
    assert routed.model != "small" and routed.stop_reason == "tool_use"


def test_tools_to_a_model_without_them_is_a_400(env):
    with pytest.raises(anthropic.BadRequestError) as e:
        client(env).messages.create(model="small", max_tokens=8, messages=USER, tools=[WEATHER])
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert "supports_tools" in e.value.body["error"]["message"]


def test_errors_in_anthropic_shape(env):
    url = env["srv"].base_url + "/v1/messages"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=env["srv"].base_url, api_key="cr-wrong", max_retries=0).messages.create(
            model=ROUTER, max_tokens=8, messages=USER
        )
    r = httpx.post(url, json={"model": ROUTER, "max_tokens": 8, "messages": USER})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert r.json()["type"] == "error"
    h = {"x-api-key": env["key"]}
    r = httpx.post(url, json={"model": ROUTER, "messages": USER}, headers=h)  # no max_tokens
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in r.json()["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        client(env).messages.create(model="caproute/nope", max_tokens=8, messages=USER)
    # Bearer works too, and the OpenAI routes keep OpenAI's error shape
    r = httpx.post(url, json={"model": "mid", "max_tokens": 8, "messages": USER},
                   headers={"authorization": f"Bearer {env['key']}"})
    assert r.status_code == 200 and r.json()["model"] == "mid"
    r = httpx.post(env["srv"].base_url + "/v1/chat/completions", json={"model": ROUTER, "messages": USER})
    assert r.status_code == 401 and "type" not in r.json()
    for s in env["switches"].values():
        s.failing = True
    with pytest.raises(anthropic.APIStatusError) as e:
        client(env).messages.create(model=ROUTER, max_tokens=8, messages=USER)
    assert e.value.status_code == 502 and e.value.body["error"]["type"] == "api_error"


# -- the translation, unit by unit ---------------------------------------------------------------


def test_request_translation_system_blocks_images_tools():
    body = MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 5,
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            "stop_sequences": ["\n\n"],
            "temperature": 0.5,
            "top_k": 3,
            "metadata": {"user_id": "u1"},
            "tools": [WEATHER],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "and?"},
                ]},
            ],
        }
    )
    raw = to_openai(body)
    assert raw["messages"] == [
        {"role": "system", "content": "Be brief.\nBe kind."},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
        ]},
        {"role": "assistant", "content": "calling", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "user", "content": "and?"},
    ]
    assert raw["stop"] == ["\n\n"] and raw["user"] == "u1" and raw["max_tokens"] == 5 and "top_k" not in raw
    assert raw["tool_choice"] == "required" and raw["parallel_tool_calls"] is False
    assert raw["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    bad = MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document"}]}]}
    )
    with pytest.raises(ApiError, match=r"messages\[0\].content\[0\]: content block type 'document'"):
        to_openai(bad)


def test_answer_translation_and_event_stream():
    data = {
        "model": "big",
        "choices": [{"index": 0, "finish_reason": "length", "message": {
            "role": "assistant", "content": "hi",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
        }}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    }
    msg = to_message(data, "msg_x")
    assert msg["content"] == [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]
    assert msg["stop_reason"] == "max_tokens" and msg["usage"] == {"input_tokens": 7, "output_tokens": 3}
    ev = EventStream("msg_y", input_tokens=4)
    out = ev.chunk({"model": "big", "choices": [{"index": 0, "delta": {"content": "a"}}]})
    out += ev.chunk({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c2", "function": {"name": "f", "arguments": '{"a"'}}]}}]})
    out += ev.chunk({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 2}"}}]},
                                  "finish_reason": "tool_calls"}]})
    out += ev.end()
    events = [json.loads(ln[6:]) for ln in out.decode().splitlines() if ln.startswith("data: ")]
    assert [e["type"] for e in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]
    assert events[4]["content_block"] == {"type": "tool_use", "id": "c2", "name": "f", "input": {}}
    assert events[4]["index"] == 1 and events[6]["delta"] == {"type": "input_json_delta", "partial_json": ": 2}"}
    assert events[8]["delta"]["stop_reason"] == "tool_use" and events[8]["usage"]["output_tokens"] == 3
    assert events[0]["message"]["usage"]["input_tokens"] == 4
