"""``caproute serve`` as a user runs it (a real subprocess): a bad feedback store, request log, duel
encoder or API-key variable, or a port in use, is a named error with exit status 2, before the banner
and without a traceback; ``--workers 2`` serves
from two processes sharing one port and one feedback store."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from caproute.serve.echo import echo_app
from caproute.serve.testing import TEST_MODELS, UvicornThread, free_port, train_router, write_pool_yaml


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve-cli")
    backend = UvicornThread(echo_app("echo")).start()
    pool = write_pool_yaml(
        d / "pool.yaml", [{"name": n, "base_url": backend.base_url + "/v1", "model": n} for n in TEST_MODELS]
    )
    yield {"dir": d, "router": train_router(d / "router"), "pool": pool}
    backend.stop()


def serve_args(env, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "caproute",
        "serve",
        "--router",
        f"r={env['router']}",
        "--pool",
        str(env["pool"]),
        "--insecure-local",
        "--log-level",
        "warning",
        *extra,
    ]


def run_fails(env, *extra) -> str:
    p = subprocess.run(serve_args(env, *extra), capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    assert "Traceback" not in out and "caproute serve: routers" not in out  # no banner
    return out


def test_feedback_db_that_is_a_directory(env):
    d = env["dir"] / "a-directory"
    d.mkdir()
    out = run_fails(env, "--feedback-db", str(d), "--port", str(free_port()))
    assert "a-directory" in out and "is a directory" in out


def test_feedback_db_that_is_not_sqlite(env):
    f = env["dir"] / "notes.txt"
    f.write_text("these are my notes, not a database\n" * 10)
    out = run_fails(env, "--feedback-db", str(f), "--port", str(free_port()))
    assert "notes.txt" in out and "not an SQLite database" in out
    assert f.read_text().startswith("these are my notes")  # untouched


def test_feedback_db_of_another_application(env):
    import sqlite3

    f = env["dir"] / "other.db"
    con = sqlite3.connect(f)
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.commit()
    con.close()
    before = f.read_bytes()
    out = run_fails(env, "--feedback-db", str(f), "--port", str(free_port()))
    assert "other.db" in out and "not a caproute feedback store" in out
    con = sqlite3.connect(f)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["invoices"]
    con.close()
    assert f.read_bytes() == before  # not even its journal mode changed


def test_port_already_taken(env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run_fails(env, "--feedback-db", str(env["dir"] / "fb.sqlite3"), "--port", str(port))
    assert f"--port {port}" in out and "already in use" in out


@pytest.mark.parametrize("kind", ["directory", "text", "other-app", "other-requests", "parent-is-a-file"])
def test_bad_log_store(env, kind):
    import sqlite3

    d = env["dir"] / f"log-{kind}"
    d.mkdir()
    target = d / "log.sqlite3"
    if kind == "directory":
        target.mkdir()
    elif kind == "text":
        target.write_text("my notes\n")
    elif kind in ("other-app", "other-requests"):
        con = sqlite3.connect(target)
        con.execute("CREATE TABLE invoices (id INTEGER)" if kind == "other-app" else "CREATE TABLE requests (id INTEGER)")
        con.commit()
        con.close()
    else:
        (d / "afile").write_text("x")
        target = d / "afile" / "log.sqlite3"
    before = target.read_bytes() if target.is_file() else None
    out = run_fails(env, "--feedback-db", str(d / "fb.sqlite3"), "--port", str(free_port()), "--log-store", str(target))
    assert "--log-store" in out or "request log" in out
    assert str(target) in out or target.name in out
    if before is not None:
        assert target.read_bytes() == before          # untouched


def test_duel_policy_whose_encoder_is_missing(env):
    import numpy as np

    from caproute.bandits.fgts import FGTSCDB

    pol = env["dir"] / "duel-no-encoder"
    FGTSCDB(np.eye(len(TEST_MODELS), 8), list(TEST_MODELS), encoder=str(env["dir"] / "no-such-encoder")).save(pol)
    out = run_fails(env, "--feedback-db", str(env["dir"] / "fb-duel.sqlite3"), "--port", str(free_port()),
                    "--duel-policy", str(pol))
    assert "duel policy" in out and "no-such-encoder" in out


def test_pool_api_key_variable_not_set(env, monkeypatch):
    monkeypatch.delenv("CAPROUTE_TEST_NO_SUCH_KEY", raising=False)
    backend = str(env["pool"])
    pool = write_pool_yaml(env["dir"] / "pool-keys.yaml", [
        {"name": n, "base_url": "http://127.0.0.1:9/v1", "model": n, "api_key_env": "CAPROUTE_TEST_NO_SUCH_KEY"}
        for n in TEST_MODELS])
    args = serve_args(env, "--feedback-db", str(env["dir"] / "fb-keys.sqlite3"), "--port", str(free_port()))
    args[args.index(backend)] = str(pool)
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    assert "Traceback" not in out and "caproute serve: routers" not in out  # named error before the banner
    assert "CAPROUTE_TEST_NO_SUCH_KEY" in out and "not set" in out


@pytest.mark.slow
def test_two_workers_share_the_port_and_the_feedback_store(env):
    port = free_port()
    db = env["dir"] / "workers.sqlite3"
    log = open(env["dir"] / "workers.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        serve_args(env, "--feedback-db", str(db), "--port", str(port), "--workers", "2"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (
                env["dir"] / "workers.log"
            ).read_text()
            time.sleep(0.2)
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        workers = [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
        assert len(workers) == 2  # (multiprocessing's resource tracker is a third child)
        ids = []
        for i in range(20):  # new connections: the kernel spreads them over both workers
            with httpx.Client(timeout=30) as c:
                r = c.post(
                    url + "/v1/chat/completions",
                    json={"model": "caproute/r", "messages": [{"role": "user", "content": f"q {i}"}]},
                )
                assert r.status_code == 200, r.text
                ids.append(r.headers["x-caproute-response-id"])
        # a conversation keeps its first model whichever worker its later turns land on (the
        # workers share the sticky map); later turns are texts the router would send elsewhere
        first = None
        for i, text in enumerate(["q 0", *[f"unrelated topic {k} " * 3 for k in range(12)]]):
            with httpx.Client(timeout=30) as c:
                r = c.post(url + "/v1/chat/completions", headers={"x-caproute-conversation-id": "conv-1"},
                           json={"model": "caproute/r", "messages": [{"role": "user", "content": text}]})
            assert r.status_code == 200, r.text
            model, meta = r.headers["x-caproute-model"], r.json()["caproute"]
            if i == 0:
                first = model
                assert meta["sticky"] is False
            else:
                assert model == first and meta["sticky"] is True, (i, model, first, meta["decision"]["model"])
        assert Path(f"{db}.sticky").exists()
        # feedback through other connections (possibly the other worker) finds every response
        for rid in ids:
            with httpx.Client(timeout=30) as c:
                r = c.post(url + "/v1/feedback", json={"response_id": rid, "score": 0.5})
            assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    import sqlite3

    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 20
    con.close()
