"""``POST /v1/messages`` through ``caproute serve`` (a real subprocess) in front of the real local
llama.cpp pool, driven by the official ``anthropic`` client: a routed message with a system
prompt and the decision in headers, a stream, tool use sent only to the model whose pool entry
has tools (a 400 for the one without), and ``x-api-key`` auth. Answers are a few tokens."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from test_serve_pool import POOL_MODELS, ServeProcess, key, pool, router  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.pool, pytest.mark.slow]
anthropic = pytest.importorskip("anthropic")
pytest.importorskip("llama_cpp")

USER = [{"role": "user", "content": "What is 2 + 2? Answer with a number."}]
NO_TOOLS = POOL_MODELS[1]  # its pool entry says supports_tools: false
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, pool, router, key):  # noqa: F811
    d = tmp_path_factory.mktemp("serve-anthropic")
    spec = yaml.safe_load(pool.config_path.read_text())
    for m in spec["models"]:
        m["supports_tools"] = m["name"] != NO_TOOLS
    (d / "pool.yaml").write_text(yaml.safe_dump(spec))
    s = ServeProcess(d, SimpleNamespace(config_path=d / "pool.yaml"), router, key[0])
    yield s
    s.stop()


def client(server, api_key):
    return anthropic.Anthropic(base_url=server.url, api_key=api_key, max_retries=0, timeout=120)


def test_routed_message_and_stream(server, key):  # noqa: F811
    c = client(server, key[1])
    raw = c.messages.with_raw_response.create(
        model="caproute/dars-knn", max_tokens=8, system="You answer math questions.", messages=USER
    )
    msg = raw.parse()
    assert raw.headers["x-caproute-model"] == msg.model in POOL_MODELS
    assert raw.headers["x-caproute-response-id"] == msg.id
    assert msg.content[0].type == "text" and msg.content[0].text.strip()
    assert msg.stop_reason in ("end_turn", "max_tokens") and msg.usage.output_tokens >= 1
    assert msg.model_extra["caproute"]["decision"]["model"] in POOL_MODELS
    with c.messages.stream(model="caproute/dars-knn", max_tokens=8, messages=USER) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.strip() and final.content[0].text == text and final.model in POOL_MODELS


def test_tools_only_where_the_pool_has_them(server, key):  # noqa: F811
    c = client(server, key[1])
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    with pytest.raises(anthropic.BadRequestError, match="supports_tools"):
        c.messages.create(model=NO_TOOLS, max_tokens=8, messages=ask, tools=[WEATHER])
    raw = c.messages.with_raw_response.create(model="caproute/dars-knn", max_tokens=16, messages=ask, tools=[WEATHER])
    msg = raw.parse()
    assert raw.headers["x-caproute-model"] == msg.model == POOL_MODELS[0]
    assert msg.content and all(b.type in ("text", "tool_use") for b in msg.content)


def test_bad_key_is_anthropic_authentication_error(server):
    with pytest.raises(anthropic.AuthenticationError):
        client(server, "cr-not-a-key").messages.create(model="caproute/dars-knn", max_tokens=1, messages=USER)
