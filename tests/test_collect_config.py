"""Pool YAML validation: every error names the file and the field path."""

from __future__ import annotations

import pytest

from caproute.collect.config import dump_pool_config, load_pool_config, parse_pool_config
from caproute.errors import ConfigError

GOOD = """
models:
  - name: small
    base_url: http://127.0.0.1:9/v1
    model: small-id
    api_key_env: ""
    price_input_per_1m: 0.5
    price_output_per_1m: 1.5
    price_cached_input_per_1m: 0.25
    max_concurrency: 2
  - name: big
    base_url: https://api.example.com/v1/
    model: big-id
    api_key_env: CAPROUTE_TEST_KEY_X
    price_input_per_1m: 0
    price_output_per_1m: 0
rewriter: {model: small}
tasks:
  arith:
    prompt_template: "Q: {question}"
    scorer: numeric
    scorer_args: {abs_tol: 0.5}
    max_tokens: 8
    fewshot: [{question: "1+1?", answer: "2"}]
"""


def write(tmp_path, text, name="pool.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_config_round_trips(tmp_path):
    cfg = load_pool_config(write(tmp_path, GOOD))
    assert [m.name for m in cfg.models] == ["small", "big"]
    assert cfg.model("big").base_url == "https://api.example.com/v1"  # trailing slash dropped
    assert cfg.task("arith").max_tokens == 8
    assert cfg.task("arith").temperature == 0.7 and cfg.task("arith").top_p == 0.95  # DARS defaults
    out = dump_pool_config(cfg, tmp_path / "again.yaml", header="hello")
    assert out.read_text().startswith("# hello\n")
    assert load_pool_config(out) == cfg


def test_cost_is_hand_computed(tmp_path):
    m = load_pool_config(write(tmp_path, GOOD)).model("small")
    # 1000 prompt tokens of which 400 cached, 200 completion tokens:
    # (600 * 0.5 + 400 * 0.25 + 200 * 1.5) / 1e6 = (300 + 100 + 300) / 1e6
    assert m.cost_usd(1000, 200, 400) == pytest.approx(700e-6)
    assert m.cost_usd(1000, 200) == pytest.approx((500 + 300) / 1e6)


def test_missing_price_is_an_error_naming_file_and_field(tmp_path):
    p = write(tmp_path, GOOD.replace("    price_output_per_1m: 1.5\n", ""))
    with pytest.raises(ConfigError) as e:
        load_pool_config(p)
    msg = str(e.value)
    assert str(p) in msg and "models[0].price_output_per_1m" in msg and "explicit price" in msg


@pytest.mark.parametrize(
    "old,new,field",
    [
        ("price_input_per_1m: 0.5", "price_input_per_1m: -1", "models[0].price_input_per_1m"),
        ("max_concurrency: 2", "max_concurrency: 0", "models[0].max_concurrency"),
        ("base_url: http://127.0.0.1:9/v1", "base_url: 127.0.0.1:9", "models[0].base_url"),
        ('prompt_template: "Q: {question}"', 'prompt_template: "Q: {query}"', "tasks.arith.prompt_template"),
        ("scorer: numeric", "scorer: no-such-scorer", "tasks.arith.scorer"),
        ("scorer_args: {abs_tol: 0.5}", "scorer_args: {tolerance: 0.5}", "tasks.arith.scorer"),
        ("rewriter: {model: small}", "rewriter: {model: nobody}", "rewriter.model"),
        ("    max_concurrency: 2\n", "    max_concurrency: 2\n    colour: red\n", "models[0].colour"),
    ],
)
def test_bad_fields_are_named(tmp_path, old, new, field):
    assert old in GOOD
    p = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as e:
        load_pool_config(p)
    assert str(p) in str(e.value) and field in str(e.value)


def test_duplicate_model_names(tmp_path):
    with pytest.raises(ConfigError, match="duplicate names"):
        load_pool_config(write(tmp_path, GOOD.replace("name: big", "name: small")))


def test_invalid_yaml_names_the_line(tmp_path):
    p = write(tmp_path, "models:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"pool.yaml: line \d+: not valid YAML"):
        load_pool_config(p)


def test_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_pool_config(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_pool_config(tmp_path / "absent.yaml")


def test_api_key_read_from_named_env_var(tmp_path, monkeypatch):
    cfg = load_pool_config(write(tmp_path, GOOD))
    monkeypatch.delenv("CAPROUTE_TEST_KEY_X", raising=False)
    with pytest.raises(ConfigError, match="CAPROUTE_TEST_KEY_X is not set"):
        cfg.model("big").api_key()
    monkeypatch.setenv("CAPROUTE_TEST_KEY_X", "sk-test")
    assert cfg.model("big").api_key() == "sk-test"
    assert cfg.model("small").api_key() == "no-key"


def test_messages_render_fewshot_turns(tmp_path):
    task = load_pool_config(write(tmp_path, GOOD)).task("arith")
    assert task.messages("2+3?") == [
        {"role": "user", "content": "Q: 1+1?"},
        {"role": "assistant", "content": "Final Answer: 2"},
        {"role": "user", "content": "Q: 2+3?"},
    ]


def test_rewriter_endpoint_must_match_its_name():
    data = {
        "models": [
            {
                "name": "a",
                "base_url": "http://x/v1",
                "model": "a",
                "api_key_env": "",
                "price_input_per_1m": 0,
                "price_output_per_1m": 0,
            }
        ]
    }
    ep = dict(data["models"][0], name="rw")
    with pytest.raises(ConfigError, match="rewriter.model"):
        parse_pool_config({**data, "rewriter": {"model": "other", "endpoint": ep}}, source="inline")
    cfg = parse_pool_config({**data, "rewriter": {"model": "rw", "endpoint": ep}}, source="inline")
    assert cfg.rewriter_endpoint().name == "rw"
