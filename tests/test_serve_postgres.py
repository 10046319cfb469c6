"""The proxy's state in PostgreSQL (issue 26), against a real server this module starts
(:class:`caproute.serve.stores.tempdb.TempPostgres`: Debian's initdb/pg_ctl in a temporary directory;
.ci/run installs the package). Stores, sticky map, schema checks, the migration command, and the
duel increments' rebuild (checkpoint + increments after it, never deltas in place of the prior)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from caproute.errors import ConfigError
from caproute.serve.feedback import Feedback, FeedbackStore, UnknownResponse
from caproute.serve.stores import pg
from caproute.serve.stores.tempdb import TempPostgres, pg_bin

pytestmark = pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed (apt-get install postgresql)")


@pytest.fixture(scope="module")
def db():
    with TempPostgres() as server:
        pg.prepare(server.url)
        yield server


def _wipe(url: str) -> None:
    con = pg.connect(url)
    con.execute("TRUNCATE feedback, responses, requests, sticky, duel_updates, duel_checkpoints, counters")
    con.close()


def _store(db, tmp_path):
    from caproute.serve.stores.postgres import PgFeedbackStore

    return PgFeedbackStore(db.url, tmp_path / "dead").start()


def test_registrations_and_idempotent_feedback(db, tmp_path):
    _wipe(db.url)
    s = _store(db, tmp_path)
    try:
        s.register({"response_id": "r1", "kind": "chat", "model": "big", "decision": {"model": "big"}})
        s.register({"response_id": "r2", "kind": "chat", "model": "mid"})
        a = s.add(Feedback("scalar", "r1", score=0.5, key_id="k1")).result(10)
        b = s.add(Feedback("scalar", "r1", score=0.9, key_id="k1")).result(10)
        c = s.add(Feedback("scalar", "r1", score=0.1, key_id=None)).result(10)
        assert b.replaced and b.feedback_id == a.feedback_id and not c.replaced
        p1 = s.add(Feedback("pairwise", "r1", "r2", key_id=None)).result(10)
        p2 = s.add(Feedback("pairwise", "r2", "r1", key_id=None)).result(10)  # the same pair: replaced
        assert p2.replaced and p2.feedback_id == p1.feedback_id and p1.duel_seq is None
        with pytest.raises(UnknownResponse):
            s.add(Feedback("scalar", "nope", score=1.0)).result(10)
        s.register({"response_id": "bad\x00nul", "kind": "chat"})  # PostgreSQL text holds no NUL
        s.register({"response_id": "r3", "kind": "chat"})
        s.add(Feedback("scalar", "r3", score=1.0)).result(10)  # the writer survived the bad record
    finally:
        s.close()
    con = pg.connect(db.url)
    rows = con.execute("SELECT score FROM feedback WHERE kind = 'scalar' AND response_id = 'r1' ORDER BY seq").fetchall()
    assert [r["score"] for r in rows] == [0.9, 0.1]
    assert con.execute("SELECT count(*) AS n FROM responses").fetchone()["n"] == 3
    assert s.dead.count == 1 and "bad" in (tmp_path / "dead.dead-letter.jsonl").read_text()


def test_a_database_restart_keeps_registrations_and_feedback_gets_an_error(db, tmp_path):
    _wipe(db.url)
    s = _store(db, tmp_path)
    try:
        s.register({"response_id": "before", "kind": "chat"})
        s.add(Feedback("scalar", "before", score=1.0)).result(10)
        db.stop()
        s.register({"response_id": "during", "kind": "chat"})  # queued, retried while the server is down
        with pytest.raises(Exception) as e:
            s.add(Feedback("scalar", "before", score=0.0)).result(20)
        assert not isinstance(e.value, UnknownResponse)
        time.sleep(0.5)
        assert s.pending >= 1 and s.commit_retries >= 1
        db.start()
        s.add(Feedback("scalar", "during", score=0.5)).result(30)  # the proxy recovered without a restart
        assert s.pending == 0
    finally:
        s.close()


def test_sticky_map_is_shared(db):
    from caproute.serve.stores.postgres import PgStickyMap

    _wipe(db.url)
    a, b = PgStickyMap(db.url, ttl_s=60), PgStickyMap(db.url, ttl_s=60)
    assert a.get("c1", "r") is None
    a.set("c1", "r", "big")
    assert b.get("c1", "r") == "big" and b.get("c1", "other") is None and len(b) == 1
    b.set("c1", "r", "mid")
    assert a.get("c1", "r") == "mid"
    old = PgStickyMap(db.url, ttl_s=60, clock=lambda: time.time() - 120)
    old.set("c2", "r", "small")
    assert a.get("c2", "r") is None  # expired
    down = PgStickyMap("postgresql://postgres@/caproute?host=/nonexistent&port=1")
    assert down.get("c1", "r") is None and down.errors == 1  # a miss, never an error


def test_schema_errors_are_named(db, tmp_path):
    with pytest.raises(ConfigError, match=r"cannot connect to the PostgreSQL state .*\*\*\*"):
        pg.prepare("postgresql://u:secret@127.0.0.1:1/x")
    con = pg.connect(db.url)
    con.execute("CREATE DATABASE other")
    con.close()
    other = db.url.replace("/caproute?", "/other?")
    oc = pg.connect(other)
    oc.execute("CREATE SCHEMA caproute")
    oc.execute("CREATE TABLE caproute.orders (id int)")
    oc.close()
    with pytest.raises(ConfigError, match="did not create"):
        pg.prepare(other)
    con = pg.connect(db.url)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    try:
        with pytest.raises(ConfigError, match="version 99"):
            pg.prepare(db.url)
    finally:
        con.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(pg.SCHEMA_VERSION),))
        con.close()


def test_serve_migrate_copies_the_sqlite_files(db, tmp_path):
    from caproute.serve.conversation import SharedStickyMap
    from caproute.serve.log_store import RequestLog

    _wipe(db.url)
    fbdb = tmp_path / "fb.sqlite3"
    with FeedbackStore(fbdb) as s:
        for k in range(5):
            s.register({"response_id": f"r{k}", "kind": "chat", "model": "big"})
        for k in range(3):
            s.add(Feedback("scalar", f"r{k}", score=k / 2)).result(10)
    rl = RequestLog(tmp_path / "log.sqlite3").start()
    rl.record(response_id="r0", kind="chat", model="big", messages=[{"role": "user", "content": "hi"}], answer="yo")
    rl.close()
    SharedStickyMap(f"{fbdb}.sticky").set("conv", "r", "mid")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "caproute", "serve-migrate", "--to", db.url, "--feedback-db", str(fbdb),
           "--log-store", str(tmp_path / "log.sqlite3")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "responses: 5 copied" in res.stdout and "feedback: 3 copied" in res.stdout
    assert "requests: 1 copied" in res.stdout and "sticky: 1 copied" in res.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and "responses: 0 copied, 5 already there" in again.stdout
    con = pg.connect(db.url)
    assert [r["score"] for r in con.execute("SELECT score FROM feedback ORDER BY seq")] == [0.0, 0.5, 1.0]
    con.close()
    bad = subprocess.run([*cmd[:5], "postgresql://u:pw@127.0.0.1:1/x", *cmd[6:]], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 2 and "cannot connect" in bad.stderr and "pw" not in bad.stderr
    assert "Traceback" not in bad.stderr


# -- the dueling policy's increments ----------------------------------------------------------------
def _policy(tmp_path, prior: bool):
    from caproute.bandits.fgts import FGTSCDB

    rng = np.random.default_rng(0)
    arms = rng.normal(size=(3, 8))
    kw = {}
    if prior:  # an offline prior far from N(0, I): deltas reloaded in its place would lose it
        kw = {"prior_mean": rng.normal(size=8) * 2, "prior_cov": np.eye(8) * 0.3}
    p = FGTSCDB(arms, ["a", "b", "c"], sampler="laplace", feel_good="tilt", seed=0, **kw)
    p.save(tmp_path / "base")
    return p


def _duels(n, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        i, j = rng.choice(3, size=2, replace=False)
        out.append((rng.normal(size=8), int(i), int(j)))
    return out


def test_rebuild_is_checkpoint_plus_later_increments_over_the_prior(db, tmp_path):
    """The LiteLLM bug class: increments must be applied on top of the state they are increments of
    (the prior, or a checkpoint that holds the prior and the increments before it), once each."""
    from caproute.bandits.policy import DuelingPolicy
    from caproute.serve.stores.postgres import (
        apply_increments,
        embedding_bytes,
        fetch_increments,
        policy_from_bytes,
        policy_to_bytes,
    )

    _wipe(db.url)
    _policy(tmp_path, prior=True)
    duels = _duels(12)
    con = pg.connect(db.url)
    for k, (x, i, j) in enumerate(duels):
        con.execute("INSERT INTO duel_updates (policy_fp, duel_id, feedback_id, winner_arm, loser_arm, x, created) "
                    "VALUES ('fp', %s, %s, %s, %s, %s, 0)", (f"d{k}", f"f{k}", i, j, embedding_bytes(x)))
    rows = fetch_increments(con, "fp", 0)
    # one process fed the sequence
    ref = DuelingPolicy.load(tmp_path / "base")
    for x, i, j in duels:
        ref.update(x, i, j, 1)
    # a replica rebuilt from the base (the prior) + every increment
    full = DuelingPolicy.load(tmp_path / "base")
    assert apply_increments(full, rows) == rows[-1]["seq"]
    # a replica rebuilt from a checkpoint after 7 increments + the 5 after it
    cp = DuelingPolicy.load(tmp_path / "base")
    apply_increments(cp, rows[:7])
    restored = policy_from_bytes(*policy_to_bytes(cp))
    apply_increments(restored, fetch_increments(con, "fp", rows[6]["seq"]))
    for p in (full, restored):
        assert p.t_ == ref.t_ == 12
        np.testing.assert_array_equal(p.theta_map_, ref.theta_map_)
        np.testing.assert_array_equal(p.cov_, ref.cov_)
        np.testing.assert_array_equal(p.history_.x, ref.history_.x)
    # the bugs this guards against: deltas over a fresh N(0, I) instead of the prior, and a checkpoint
    # that gets its own increments applied again
    no_prior = _policy(tmp_path / "np", prior=False)
    apply_increments(no_prior, rows)
    assert np.abs(no_prior.theta_map_ - ref.theta_map_).max() > 0.1
    twice = policy_from_bytes(*policy_to_bytes(cp))
    apply_increments(twice, rows)
    assert twice.t_ == 19 and np.abs(twice.theta_map_ - ref.theta_map_).max() > 1e-3
    con.close()


def test_duel_increment_is_written_with_its_feedback_once(db, tmp_path):
    from caproute.serve.stores.postgres import PgFeedbackStore

    _wipe(db.url)
    s = PgFeedbackStore(db.url, tmp_path / "dead").start()
    s.policy_fp, x = "fp1", np.arange(4.0)
    s.embedding_of = {"d1": x}.get
    try:
        for arm, rid in ((2, "d1-a"), (0, "d1-b")):
            s.register({"response_id": rid, "kind": "duel", "duel_id": "d1", "duel_arm": arm, "routing_text": "q"})
        first = s.add(Feedback("pairwise", "d1-b", "d1-a", key_id="k")).result(10)
        assert first.duel_seq is not None
        assert s.add(Feedback("pairwise", "d1-a", "d1-b", key_id="k")).result(10).duel_seq is None  # changed mind
        assert s.add(Feedback("pairwise", "d1-a", "d1-b", key_id="k2")).result(10).duel_seq is None  # other key
        s.register({"response_id": "t-a", "kind": "duel", "duel_id": "t", "duel_arm": 0})
        s.register({"response_id": "t-b", "kind": "duel", "duel_id": "t", "duel_arm": 1})
        assert s.add(Feedback("pairwise", "t-a", "t-b", tie=True)).result(10).duel_seq is None  # ties: not learned
    finally:
        s.close()
    con = pg.connect(db.url)
    rows = con.execute("SELECT * FROM duel_updates").fetchall()
    assert len(rows) == 1 and (rows[0]["winner_arm"], rows[0]["loser_arm"]) == (0, 2)
    np.testing.assert_array_equal(np.frombuffer(rows[0]["x"], "<f8"), x)
    con.close()
