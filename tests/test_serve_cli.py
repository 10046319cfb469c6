"""``caproute serve`` as a user runs it (a real subprocess): a bad feedback store or a port in use is a
named error with exit status 2, before the banner and without a traceback; ``--workers 2`` serves
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
    out = run_fails(env, "--feedback-db", str(f), "--port", str(free_port()))
    assert "other.db" in out and "not a caproute feedback store" in out
    con = sqlite3.connect(f)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["invoices"]
    con.close()


def test_port_already_taken(env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run_fails(env, "--feedback-db", str(env["dir"] / "fb.sqlite3"), "--port", str(port))
    assert f"--port {port}" in out and "already in use" in out


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
