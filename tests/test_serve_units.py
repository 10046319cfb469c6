"""Unit tests of the proxy's pure parts: model-name grammar, conversation text, calibration math
(hand-computed), drift, API keys, the feedback store, request schemas and config checks."""

from __future__ import annotations

import json
import sqlite3
import threading

import numpy as np
import pytest
from pydantic import ValidationError

from caproute.errors import ConfigError
from caproute.serve.auth import KeyRing, append_key, bearer, hash_key, parse_hashes
from caproute.serve.calibrate import (
    CalibrationError,
    CalibrationTarget,
    fit_lambda,
    lambda_breakpoints,
    lambda_grid,
    load_policy,
    policy_dict,
    write_policy,
)
from caproute.serve.config import ServeConfig, load_serve_config
from caproute.serve.conversation import StickyMap, message_text, routing_text
from caproute.serve.drift import DriftMonitor, share_tv
from caproute.serve.errors import ApiError
from caproute.serve.feedback import Feedback, FeedbackStore, InvalidFeedback, UnknownResponse
from caproute.serve.naming import parse_model
from caproute.serve.routing import fallback_order
from caproute.serve.schemas import ChatCompletionRequest, FeedbackRequest, RouteRequest

ROUTERS, POOL = {"dars-knn", "other"}, {"smollm2-135m", "gemma3-270m"}


# -- model field ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, kind, name, budget, lam, beta",
    [
        ("caproute/dars-knn", "router", "dars-knn", None, None, None),
        ("caproute", "router", "dars-knn", None, None, None),
        ("caproute/", "router", "dars-knn", None, None, None),
        ("caproute/other@cheap", "router", "other", "cheap", None, None),
        ("caproute/dars-knn:lambda=0.5,beta=0", "router", "dars-knn", None, 0.5, 0.0),
        ("caproute/dars-knn@cheap:lam=2", "router", "dars-knn", "cheap", 2.0, None),
        ("smollm2-135m", "direct", "smollm2-135m", None, None, None),
    ],
)
def test_parse_model(value, kind, name, budget, lam, beta):
    t = parse_model(value, routers=ROUTERS, pool=POOL, default_router="dars-knn")
    assert (t.kind, t.name, t.budget, t.lam, t.beta) == (kind, name, budget, lam, beta)


def test_parse_model_duel_only_when_enabled():
    assert (
        parse_model("caproute/duel", routers=ROUTERS, pool=POOL, default_router=None, duel=True).kind
        == "duel"
    )
    with pytest.raises(ApiError) as e:
        parse_model("caproute/duel", routers=ROUTERS, pool=POOL, default_router=None)
    assert e.value.status == 404 and e.value.code == "model_not_found"


@pytest.mark.parametrize(
    "value, status, code",
    [
        ("gpt-4o", 404, "model_not_found"),
        ("caproute/nope", 404, "model_not_found"),
        ("caproute/dars-knn:lambda=-1", 400, "invalid_model_suffix"),
        ("caproute/dars-knn:lambda=abc", 400, "invalid_model_suffix"),
        ("caproute/dars-knn:lambda=nan", 400, "invalid_model_suffix"),
        ("caproute/dars-knn:gamma=1", 400, "invalid_model_suffix"),
    ],
)
def test_parse_model_errors(value, status, code):
    with pytest.raises(ApiError) as e:
        parse_model(value, routers=ROUTERS, pool=POOL, default_router="dars-knn")
    assert (e.value.status, e.value.code, e.value.param) == (status, code, "model")
    assert e.value.body()["error"]["type"] in ("not_found_error", "invalid_request_error")


def test_unknown_model_lists_what_exists():
    with pytest.raises(ApiError) as e:
        parse_model("gpt-4o", routers=ROUTERS, pool=POOL, default_router="dars-knn")
    assert "caproute/dars-knn" in e.value.message and "gemma3-270m" in e.value.message


# -- conversations ----------------------------------------------------------------------------------

CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "second"},
            {"type": "image_url", "image_url": {}},
            {"type": "text", "text": "question"},
        ],
    },
]


def test_routing_text_modes():
    assert routing_text(CHAT, "last_user") == "second\nquestion"
    assert routing_text(CHAT, "user_turns") == "first question\nsecond\nquestion"
    assert routing_text(CHAT, "history") == (
        "user: first question\nassistant: first answer\nuser: second\nquestion"
    )
    assert routing_text(CHAT, "history", max_chars=15) == "second\nquestion"[-15:]
    assert routing_text([{"role": "system", "content": "only a system prompt"}]) == "only a system prompt"
    assert message_text(None) == "" and message_text(5) == ""
    with pytest.raises(ValueError):
        routing_text(CHAT, "everything")


def test_sticky_map_ttl_and_lru():
    now = [0.0]
    s = StickyMap(max_entries=2, ttl_s=10, clock=lambda: now[0])
    s.set("c1", "r", "m1")
    s.set("c2", "r", "m2")
    assert s.get("c1", "r") == "m1" and s.get("c1", "other-router") is None
    s.set("c3", "r", "m3")  # evicts c2, the least recently used
    assert s.get("c2", "r") is None and s.get("c3", "r") == "m3"
    now[0] = 100.0
    assert s.get("c1", "r") is None


def test_shared_sticky_map_across_workers(tmp_path):
    import sqlite3

    from caproute.serve.conversation import SharedStickyMap, sticky_path

    now = [1000.0]
    path = sticky_path(tmp_path / "fb.sqlite3")
    a = SharedStickyMap(path, max_entries=2, ttl_s=10, clock=lambda: now[0], evict_every=1)
    b = SharedStickyMap(path, max_entries=2, ttl_s=10, clock=lambda: now[0], evict_every=1)   # another worker
    a.set("c1", "r", "m1")
    assert b.get("c1", "r") == "m1" and b.get("c1", "other-router") is None   # seen by the other worker
    now[0] += 1
    b.set("c2", "r", "m2")
    now[0] += 1
    assert a.get("c1", "r") == "m1"          # touches c1: c2 is now the least recently used
    now[0] += 1
    a.set("c3", "r", "m3")                   # evicts c2
    assert b.get("c2", "r") is None and b.get("c3", "r") == "m3" and len(a) == 2
    b.set("c1", "r", "m9")                   # a later choice replaces the earlier one
    assert a.get("c1", "r") == "m9"
    now[0] += 100
    assert a.get("c1", "r") is None          # expired
    # a database locked by someone else: a miss, counted and logged, never a stalled request
    hold = sqlite3.connect(path, isolation_level=None)
    hold.execute("BEGIN EXCLUSIVE")
    c = SharedStickyMap(path, ttl_s=10, clock=lambda: now[0], busy_timeout_s=0.05)
    assert c.get("c3", "r") is None and c.errors == 1
    c.set("c4", "r", "m4")
    assert c.errors == 2
    hold.execute("ROLLBACK")
    hold.close()
    c.set("c4", "r", "m4")
    assert a.get("c4", "r") == "m4"


def test_fallback_order_by_utility_then_cost_then_order():
    u = {"a": 0.5, "b": 0.7, "c": 0.5, "d": 0.9}
    c = {"a": 0.2, "b": 0.1, "c": 0.1, "d": 0.0}
    assert fallback_order(u, c, "b", ["a", "b", "c", "d"]) == ["b", "d", "c", "a"]


# -- calibration (hand-computed) ------------------------------------------------------------------------
# Two queries, models (strong, weak), beta = 0. The strong model wins query 1 while lambda < 0.4 and
# query 2 while lambda < 0.1, so the distinct routings are: both strong (lambda < 0.1), split
# (0.1 < lambda < 0.4), both weak (lambda > 0.4). USD costs 10 (strong) and 1 (weak).
MU_Q = np.array([[0.9, 0.5], [0.8, 0.7]])
MU_C = np.array([[1.0, 0.0], [1.0, 0.0]])
SIG = np.zeros((2, 2))
USD = np.array([[10.0, 1.0], [10.0, 1.0]])
MODELS = ("strong", "weak")


def test_breakpoints_and_grid():
    assert lambda_breakpoints(MU_Q, MU_C, SIG, 0.0) == pytest.approx([0.1, 0.4])
    assert lambda_grid(MU_Q, MU_C, SIG, 0.0) == pytest.approx([0.0, 0.05, 0.25, 0.8])
    # beta shifts the breakpoints: (dq - beta * dsigma) / dc with dsigma = 0.5 on query 1
    sig = np.array([[0.5, 0.0], [0.0, 0.0]])
    assert lambda_breakpoints(MU_Q, MU_C, sig, 0.2) == pytest.approx([0.1, 0.3])


def fit(kind, value, model=None):
    return fit_lambda(CalibrationTarget(kind, value, model), MODELS, MU_Q, MU_C, SIG, 0.0, USD, MU_Q)


def test_fit_cost_target():
    cal = fit("cost", 6.0)  # split routing: mean cost (10 + 1) / 2 = 5.5 <= 6, quality (0.9 + 0.7) / 2
    assert cal.lam == pytest.approx(0.25)
    assert cal.mean_cost == pytest.approx(5.5) and cal.mean_quality == pytest.approx(0.8)
    assert cal.share == pytest.approx({"strong": 0.5, "weak": 0.5})
    assert fit("cost", 20.0).lam == 0.0  # everything fits: best quality, smallest lambda
    assert fit("cost", 1.0).lam == pytest.approx(0.8)
    with pytest.raises(CalibrationError, match="cheapest routing"):
        fit("cost", 0.5)


def test_fit_share_and_quality_targets():
    assert fit("share", 0.5, "strong").lam == pytest.approx(0.25)
    assert fit("share", 0.0, "strong").lam == pytest.approx(0.8)
    assert fit("quality", 0.8).lam == pytest.approx(0.25)  # cheapest routing with quality >= 0.8
    assert fit("quality", 0.85).lam == pytest.approx(0.0)
    assert fit("quality", 0.6).lam == pytest.approx(0.8)
    with pytest.raises(CalibrationError, match="above the best"):
        fit("quality", 0.9)
    with pytest.raises(CalibrationError, match="not one of"):
        fit("share", 0.5, "nope")


def test_target_validation():
    with pytest.raises(ConfigError, match="target kind must be one of"):
        CalibrationTarget("speed", 1.0)
    assert CalibrationTarget("latency", 0.5).value == 0.5   # seconds per query (PROPOSED latency budget)
    with pytest.raises(ConfigError):
        CalibrationTarget("share", 1.5, "m")
    with pytest.raises(ConfigError):
        CalibrationTarget("cost", -1.0)


def test_policy_roundtrip_and_errors(tmp_path):
    cal = fit("cost", 6.0)
    doc = policy_dict(
        cal, router="r", router_fingerprint="f" * 64, sample={"n": 2}, created="2026-01-01T00:00:00"
    )
    again = policy_dict(
        cal, router="r", router_fingerprint="f" * 64, sample={"n": 2}, created="2026-02-01T00:00:00"
    )
    assert doc["version"] == again["version"]  # the version depends on content, not time
    p = write_policy(doc, tmp_path / "policy.json")
    pol = load_policy(p)
    assert (
        pol.lam == pytest.approx(0.25)
        and pol.target.kind == "cost"
        and pol.target_value() == pytest.approx(5.5)
    )
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "caproute-policy",\n "format_version": 1,\n')
    with pytest.raises(ConfigError, match=r"bad.json: invalid JSON .*line 3"):
        load_policy(bad)
    # the file checks itself: an edited value is a checksum mismatch
    text = p.read_text()
    assert json.loads(text)["format_version"] == 2 and len(json.loads(text)["sha256"]) == 64
    p.write_text(text.replace('"lambda": 0.25', '"lambda": 0.3'))
    with pytest.raises(ConfigError, match="policy.json: checksum mismatch"):
        load_policy(p)
    doc.pop("lambda")
    write_policy(doc, bad)
    with pytest.raises(ConfigError, match="'lambda' is missing"):
        load_policy(bad)


def test_format_1_policy_still_loads(tmp_path):
    """A policy written before lambda_t and the checksum (format 1, plain JSON) loads with lambda_t 0."""
    doc = policy_dict(fit("cost", 6.0), router="r", router_fingerprint="f" * 64, sample={"n": 2})
    for k in ("lambda_t", "format_version"):
        doc.pop(k)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**doc, "format_version": 1}))
    pol = load_policy(old)
    assert (pol.lam, pol.lam_t, pol.version) == (pytest.approx(0.25), 0.0, doc["version"])
    old.write_text(json.dumps({**doc, "format_version": 3}))
    with pytest.raises(ConfigError, match="format_version 3, this caproute reads 2"):
        load_policy(old)


# -- drift ------------------------------------------------------------------------------------------


def test_share_tv_hand_computed():
    assert share_tv(np.array([3, 1]), np.array([0.5, 0.5])) == pytest.approx(0.25)
    assert share_tv(np.array([0, 0]), np.array([0.5, 0.5])) == 0.0


def test_drift_monitor_window_and_transitions():
    d = DriftMonitor(
        ("a", "b"),
        {"a": 0.5, "b": 0.5},
        "share",
        0.5,
        strong_model="a",
        window=4,
        share_tolerance=0.2,
        target_tolerance=0.2,
    )
    states = [d.record(i, 0.0, 0.5) for i in (0, 1, 0, 1)]
    assert [s.drifting for s in states] == [False] * 4 and states[-1].share_tv == 0.0
    s = d.record(0, 0.0, 0.5)  # window (1, 0, 1, 0) -> still balanced
    assert not s.drifting
    s = d.record(0, 0.0, 0.5)  # (0, 1, 0, 0): share of a = 0.75, TV 0.25 > 0.2
    assert s.drifting and s.changed and s.share_tv == pytest.approx(0.25)
    assert s.target_deviation == pytest.approx(0.25)
    s = d.record(0, 0.0, 0.5)
    assert s.drifting and not s.changed
    assert d.record(1, 0.0, 0.5).drifting  # (0, 0, 0, 1)
    s = d.record(1, 0.0, 0.5)  # (0, 0, 1, 1): balanced again
    assert not s.drifting and s.changed


def test_drift_cost_target_is_relative():
    d = DriftMonitor(("a",), {"a": 1.0}, "cost", 2.0, window=2, share_tolerance=1, target_tolerance=0.2)
    d.record(0, 2.0, 0)
    s = d.record(0, 3.0, 0)  # live mean 2.5 vs 2.0: +25 %
    assert s.target_deviation == pytest.approx(0.25) and s.drifting


# -- API keys -----------------------------------------------------------------------------------------


def test_keys_hashed_and_checked(tmp_path):
    f = tmp_path / "keys.txt"
    key = append_key(f, "ci")
    text = f.read_text()
    assert key not in text and hash_key(key) in text and text.strip().endswith("ci")
    ring = KeyRing.load(f, env={})
    assert ring.check(key) and not ring.check(key + "x") and not ring.check(None) and not ring.check("")
    env_ring = KeyRing.load(None, env={"CAPROUTE_API_KEY_HASHES": f"{hash_key('a')},{hash_key('b')}"})
    assert env_ring.check("b") and not env_ring.check("c")
    assert bearer("Bearer abc") == "abc" and bearer("Basic abc") is None and bearer("Bearer ") is None
    assert bearer(None) is None


def test_keys_file_rejects_plain_keys(tmp_path):
    f = tmp_path / "keys.txt"
    f.write_text("# comment\n\ncr-plaintext-key\n")
    with pytest.raises(ConfigError, match=r"keys.txt: line 3: expected 'sha256:"):
        KeyRing.load(f, env={})
    assert parse_hashes("sha256:" + "0" * 64 + " label # note\n", source="x") == [
        ("sha256:" + "0" * 64, "label")
    ]


# -- feedback store -----------------------------------------------------------------------------------


def test_feedback_store_durable_and_validated(tmp_path):
    db = tmp_path / "fb.sqlite3"
    with FeedbackStore(db) as store:
        store.register({"response_id": "r1", "kind": "chat", "model": "m", "decision": {"model": "m"}})
        store.register({"response_id": "r2", "kind": "chat", "model": "n"})
        got = store.add(Feedback("scalar", "r1", score=0.7)).result(5)
        assert got.feedback_id.startswith("fb-") and got.responses[0]["model"] == "m"
        pair = store.add(Feedback("pairwise", "r2", "r1")).result(5)
        assert [r["response_id"] for r in pair.responses] == ["r2", "r1"]
        with pytest.raises(UnknownResponse) as e:
            store.add(Feedback("pairwise", "r1", "nope")).result(5)
        assert e.value.field == "other_response_id"
        with pytest.raises(InvalidFeedback):
            store.add(Feedback("pairwise", "r1", "r1")).result(5)
    con = sqlite3.connect(db)  # reopened after close: everything acknowledged is there
    assert con.execute("SELECT count(*) FROM feedback").fetchone()[0] == 2
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_feedback_store_concurrent_threads(tmp_path):
    with FeedbackStore(tmp_path / "fb.sqlite3") as store:
        for i in range(50):
            store.register({"response_id": f"r{i}", "kind": "route"})
        futures, lock = [], threading.Lock()

        def worker(k):
            for i in range(k, 50, 5):
                f = store.add(Feedback("scalar", f"r{i}", score=i / 50))
                with lock:
                    futures.append(f)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({f.result(10).feedback_id for f in futures}) == 50
        assert store.query("SELECT count(*) AS n FROM feedback").result(5) == [{"n": 50}]
        assert store.commits < 50 + 50  # registrations and feedback were grouped into fewer commits


# -- schemas and config --------------------------------------------------------------------------------


def test_chat_request_keeps_unknown_fields_and_checks_known_ones():
    req = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.3,
            "logit_bias": {"1": 2},
            "response_format": {"type": "text"},
        }
    )
    raw = req.model_dump(exclude_unset=True, exclude={"caproute"})
    assert (
        raw["logit_bias"] == {"1": 2} and raw["response_format"] == {"type": "text"} and "stream" not in raw
    )
    for bad in (
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user"}], "temperature": 3},
        {"model": "m", "messages": [{"role": "user"}], "caproute": {"lambda": -1}},
        {"model": "m", "messages": [{"role": "user"}], "caproute": {"lambda": "inf"}},
        {"model": "m", "messages": [{"role": "user"}], "caproute": {"unknown": 1}},
    ):
        with pytest.raises(ValidationError):
            ChatCompletionRequest.model_validate(bad)


def test_feedback_and_route_request_forms():
    assert FeedbackRequest(response_id="a", score=1).score == 1
    assert FeedbackRequest(winner_id="a", loser_id="b", tie=True).tie
    for bad in (
        {},
        {"response_id": "a"},
        {"response_id": "a", "score": 1.5},
        {"winner_id": "a"},
        {"response_id": "a", "score": 1, "tie": False},
        {"response_id": "a", "score": 1, "winner_id": "b", "loser_id": "c"},
        {"response_id": "a", "score": 1, "tie": True},
    ):
        with pytest.raises(ValidationError):
            FeedbackRequest.model_validate(bad)
    assert RouteRequest.model_validate({"input": ["a", "b"], "lambda": 0.1}).lam == 0.1
    for bad in ({}, {"input": []}, {"input": "a", "messages": [{"role": "user", "content": "a"}]}):
        with pytest.raises(ValidationError):
            RouteRequest.model_validate(bad)


def test_serve_config_checks(tmp_path):
    cfg = ServeConfig(routers={"r": tmp_path}, pool=tmp_path / "pool.yaml")
    assert cfg.default_router == "r" and cfg.cors_origins == [] and not cfg.insecure_local
    with pytest.raises(ValidationError, match="loopback"):
        ServeConfig(routers={"r": tmp_path}, pool=tmp_path, insecure_local=True, host="0.0.0.0")
    assert ServeConfig(routers={"r": tmp_path}, pool=tmp_path, insecure_local=True, host="::1").insecure_local
    with pytest.raises(ValidationError, match="default_router"):
        ServeConfig(routers={"r": tmp_path}, pool=tmp_path, default_router="x")
    with pytest.raises(ValidationError, match="router names"):
        ServeConfig(routers={"a/b": tmp_path}, pool=tmp_path)
    y = tmp_path / "serve.yaml"
    y.write_text("routers: {r: runs/knn}\npool: pool.yaml\nbudgets: {cheap: {lambda: 1.0}}\nlambda: 0.1\n")
    cfg = load_serve_config(y, port=9000, host=None)
    assert cfg.routers["r"] == tmp_path / "runs/knn" and cfg.pool == tmp_path / "pool.yaml"
    assert cfg.port == 9000 and cfg.lam == 0.1 and cfg.budgets["cheap"].lam == 1.0
    y.write_text("routers: {r: x}\npool: p\nbudgets: {cheap: {}}\nmax_attempts: 0\nbogus: 1\n")
    with pytest.raises(ConfigError) as e:
        load_serve_config(y)
    msg = str(e.value)
    assert (
        "serve.yaml" in msg
        and "budgets.cheap" in msg
        and "max_attempts" in msg
        and "'bogus': unknown field" in msg
    )
    y.write_text("routers: [\n")
    with pytest.raises(ConfigError, match=r"serve.yaml: line \d+: not valid YAML"):
        load_serve_config(y)


def test_keys_file_errors_never_echo_a_secret():
    """A plaintext key pasted into the keys file is refused without showing any part of it."""
    import pytest as _pytest

    from caproute.errors import ConfigError

    secret = "sk-live-SECRETSECRET1234567890"
    with _pytest.raises(ConfigError) as e:
        parse_hashes(f"# keys\n{secret} my laptop\n", source="keys.txt")
    msg = str(e.value)
    assert "keys.txt: line 2" in msg and "not a hash" in msg
    assert not any(secret[i:i + 4] in msg for i in range(len(secret) - 3)), msg
