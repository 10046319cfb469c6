"""The online dueling mode (issue 6, item 6): ``caproute/duel`` returns two answers from the pair the
FGTS.CDB policy selects; pairwise feedback on their response ids updates the policy, which is saved.
Real MiniLM query embeddings (offline), real HTTP backends, the openai client."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest

from caproute.serve.app import create_app
from caproute.serve.config import ServeConfig
from caproute.serve.echo import ANSWER, echo_app
from caproute.serve.testing import TEST_MODELS, UvicornThread, free_port, train_router, write_pool_yaml

pytestmark = pytest.mark.slow
NAMES = TEST_MODELS
USER = [{"role": "user", "content": "Which is larger, 7 or 9?"}]


@pytest.fixture(scope="module")
def duel_server(tmp_path_factory):
    from caproute.bandits.fgts import FGTSCDB
    from caproute.features.minilm import minilm_path

    d = tmp_path_factory.mktemp("duel")
    router = train_router(d / "router")
    backends = {n: UvicornThread(echo_app(n)).start() for n in NAMES}
    pool = write_pool_yaml(
        d / "pool.yaml",
        [{"name": n, "base_url": b.base_url + "/v1", "model": n} for n, b in backends.items()],
    )
    rng = np.random.default_rng(0)
    arms = rng.normal(size=(3, 384))
    arms /= np.linalg.norm(arms, axis=1, keepdims=True)
    FGTSCDB(arms, list(NAMES), sampler="laplace", seed=0, encoder=str(minilm_path())).save(d / "policy")
    cfg = ServeConfig(
        routers={"dars-knn": router},
        pool=pool,
        insecure_local=True,
        feedback_db=d / "fb.sqlite3",
        duel_policy=d / "policy",
        duel_state_out=d / "policy-online",
    )
    with UvicornThread(create_app(cfg)) as s:
        yield s, d
    for b in backends.values():
        b.stop()


def test_duel_two_answers_and_feedback_updates_the_policy(duel_server):
    from caproute.bandits.policy import DuelingPolicy

    srv, d = duel_server
    c = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0, timeout=120)
    assert "caproute/duel" in [m.id for m in c.models.list().data]
    raw = c.chat.completions.with_raw_response.create(model="caproute/duel", messages=USER, max_tokens=4)
    comp = raw.parse()
    duel = comp.model_extra["caproute"]["duel"]
    assert [ch.index for ch in comp.choices] == [0, 1] and all(
        ch.message.content == ANSWER for ch in comp.choices
    )
    assert len(duel["response_ids"]) == 2 and set(duel["models"]) <= set(NAMES)
    assert raw.headers["x-caproute-model"] == ",".join(duel["models"]) and comp.id == duel["duel_id"]
    a, b = duel["response_ids"]
    r = httpx.post(srv.base_url + "/v1/feedback", json={"winner_id": b, "loser_id": a})
    assert r.status_code == 200 and r.json()["policy_updated"] is True
    saved = DuelingPolicy.load(d / "policy-online")
    assert saved.t_ == 1  # one duel learned and saved

    again = c.chat.completions.create(model="caproute/duel", messages=USER).model_extra["caproute"]["duel"]
    tie = httpx.post(
        srv.base_url + "/v1/feedback",
        json={"winner_id": again["response_ids"][0], "loser_id": again["response_ids"][1], "tie": True},
    )
    assert tie.status_code == 200 and tie.json()["policy_updated"] is False  # stored, not learned
    cross = httpx.post(
        srv.base_url + "/v1/feedback", json={"winner_id": a, "loser_id": again["response_ids"][0]}
    )
    assert cross.status_code == 200 and cross.json()["policy_updated"] is False  # answers of different duels
    assert DuelingPolicy.load(d / "policy-online").t_ == 1


def test_duel_does_not_stream_and_routers_still_work(duel_server):
    srv, _ = duel_server
    c = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0, timeout=120)
    with pytest.raises(openai.BadRequestError, match="does not stream"):
        c.chat.completions.create(model="caproute/duel", messages=USER, stream=True)
    assert c.chat.completions.create(model="caproute/dars-knn", messages=USER).model in NAMES


def test_duel_policy_models_must_be_in_the_pool(tmp_path):
    from caproute.bandits.fgts import FGTSCDB
    from caproute.errors import ConfigError

    router = train_router(tmp_path / "router")
    pool = write_pool_yaml(
        tmp_path / "pool.yaml",
        [{"name": n, "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": n} for n in NAMES],
    )
    FGTSCDB(np.eye(3, 4), ["big", "mid", "gpt-x"], sampler="laplace").save(tmp_path / "policy")
    with pytest.raises(ConfigError, match=r"models \['gpt-x'\] are not in the pool"):
        create_app(
            ServeConfig(
                routers={"r": router}, pool=pool, insecure_local=True, duel_policy=tmp_path / "policy"
            )
        )


def test_duel_replays_do_not_move_the_policy_and_text_is_repaired(duel_server):
    """Issue 23: a duel's {winner_id, loser_id} replayed makes no further update nor checkpoint write;
    a query with a lone surrogate is answered and learned from (not a 500)."""
    import json

    from caproute.bandits.policy import DuelingPolicy

    srv, d = duel_server
    body = json.dumps({"model": "caproute/duel", "messages": [{"role": "user", "content": "odd \ud800 text"}]})
    r = httpx.post(srv.base_url + "/v1/chat/completions", content=body,
                   headers={"content-type": "application/json"}, timeout=120)
    assert r.status_code == 200, r.text
    a, b = r.json()["caproute"]["duel"]["response_ids"]
    verdict = {"winner_id": a, "loser_id": b}
    assert httpx.post(srv.base_url + "/v1/feedback", json=verdict).json()["policy_updated"] is True
    t = DuelingPolicy.load(d / "policy-online").t_
    mtime = (d / "policy-online").stat().st_mtime_ns, sorted(p.stat().st_mtime_ns for p in (d / "policy-online").iterdir())
    for _ in range(20):
        r = httpx.post(srv.base_url + "/v1/feedback", json=verdict)
        assert r.status_code == 200 and r.json()["policy_updated"] is False and r.json()["replaced"] is True
    flipped = httpx.post(srv.base_url + "/v1/feedback", json={"winner_id": b, "loser_id": a})
    assert flipped.json()["policy_updated"] is False  # a changed mind is stored, not learned
    assert DuelingPolicy.load(d / "policy-online").t_ == t
    assert ((d / "policy-online").stat().st_mtime_ns,
            sorted(p.stat().st_mtime_ns for p in (d / "policy-online").iterdir())) == mtime  # no checkpoint write


def test_duel_serve_prints_the_step_it_started_or_resumed_from(tmp_path, capsys):
    """Issue 22.6: a restart says which step the online policy resumed from."""
    from caproute.bandits.fgts import FGTSCDB
    from caproute.bandits.policy import DuelingPolicy
    from caproute.features.minilm import minilm_path

    router = train_router(tmp_path / "router")
    pool = write_pool_yaml(
        tmp_path / "pool.yaml",
        [{"name": n, "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": n} for n in NAMES],
    )
    rng = np.random.default_rng(0)
    arms = rng.normal(size=(3, 384))
    FGTSCDB(arms, list(NAMES), sampler="laplace", seed=0, encoder=str(minilm_path())).save(tmp_path / "policy")
    cfg = ServeConfig(routers={"r": router}, pool=pool, insecure_local=True, duel_policy=tmp_path / "policy",
                      duel_state_out=tmp_path / "policy-online")
    create_app(cfg)
    assert f"duel policy: started from {tmp_path / 'policy'} at step t = 0" in capsys.readouterr().err
    pol = DuelingPolicy.load(tmp_path / "policy")
    pol.t_ = 7
    pol.save(tmp_path / "policy-online")
    create_app(cfg)
    assert f"duel policy: resumed from {tmp_path / 'policy-online'} at step t = 7" in capsys.readouterr().err
