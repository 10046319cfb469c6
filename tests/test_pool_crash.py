"""A pool server that dies is named, with how it ended and its log (issue 21).

The servers here are a stand-in for ``llama_cpp.server`` (a stdlib HTTP server that lists its model
and then, depending on its mode, answers or kills itself with SIGSEGV on the first completion, as a
llama.cpp built for another CPU does), so these tests run without llama.cpp and in a second."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caproute.cli import app
from caproute.collect import pool as poolmod
from caproute.collect.pool import PoolServerDied, pool_status, start_pool, stop_pool
from caproute.collect.pool_watch import describe_exit, read_exit

FAKE = '''
import http.server, json, os, signal, sys
port, mode = int(sys.argv[sys.argv.index("--port") + 1]), sys.argv[sys.argv.index("--mode") + 1]
print("fake llama server on", port, flush=True)

class H(http.server.BaseHTTPRequestHandler):
    def _send(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send({"data": [{"id": "m"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        if mode == "crash":
            print("ggml: about to run an instruction this CPU refuses", flush=True)
            os.kill(os.getpid(), signal.SIGSEGV)
        self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                                 "finish_reason": "length"}]})

    def log_message(self, *a):
        pass

http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
'''


@pytest.fixture
def fake_server(tmp_path, monkeypatch):
    """Make ``start_pool`` run the stand-in; returns a function that sets its mode."""
    script = tmp_path / "fake_llama.py"
    script.write_text(FAKE)
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    mode = {"value": "ok"}

    def command(g, alias, port, chat_format, n_threads=1, n_ctx=2048):
        # "llama_cpp.server" and the GGUF path in the command line, as the real one has them
        return [sys.executable, str(script), "--model", str(g), "--port", str(port), "--mode", mode["value"],
                "llama_cpp.server"]

    monkeypatch.setattr(poolmod, "server_command", command)
    monkeypatch.setattr(poolmod, "model_file", lambda name, cache=None: gguf)
    return lambda m: mode.__setitem__("value", m)


def test_describe_exit():
    assert describe_exit(0) == "exited with code 0" and describe_exit(3) == "exited with code 3"
    assert describe_exit(-signal.SIGSEGV).startswith("killed by signal SIGSEGV")
    assert read_exit("/nonexistent/x.exit") is None


def test_a_server_that_crashes_on_its_first_completion_fails_pool_up(fake_server, tmp_path):
    fake_server("crash")
    wd = tmp_path / "pool"
    t = time.monotonic()
    with pytest.raises(PoolServerDied) as e:
        start_pool(["smollm2-135m"], port_base=0, workdir=wd, rewriter_server=False, ready_timeout_s=30)
    msg = str(e.value)
    assert time.monotonic() - t < 20
    assert "'smollm2-135m'" in msg and "killed by signal SIGSEGV" in msg and "on its first completion" in msg
    assert "about to run an instruction" in msg  # the log tail
    assert "make install" in msg and "Portable build" in msg  # what to do
    assert pool_status(wd) == []  # nothing left running or recorded


def test_pool_check_names_the_crash(fake_server):
    fake_server("crash")
    r = CliRunner().invoke(app, ["pool", "check", "--models", "gemma3-270m"])
    assert r.exit_code != 0
    assert "gemma3-270m" in str(r.exception) and "SIGSEGV" in str(r.exception)
    fake_server("ok")
    r = CliRunner().invoke(app, ["pool", "check", "--models", "gemma3-270m"])
    assert r.exit_code == 0 and "each answered a completion" in r.output


def test_status_names_a_server_that_died_later(fake_server, tmp_path):
    wd = tmp_path / "pool"
    h = start_pool(["smollm2-135m"], port_base=0, workdir=wd, rewriter_server=False, ready_timeout_s=30)
    try:
        watcher = h.members[0].pid
        server = [int(p) for p in Path(f"/proc/{watcher}/task/{watcher}/children").read_text().split()][0]
        os.kill(server, signal.SIGKILL)  # the server dies; its watcher records how
        deadline = time.monotonic() + 10
        while (row := pool_status(wd)[0])["alive"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert row["exit"].startswith("killed by signal SIGKILL") and "fake llama server" in row["log_tail"]
        r = CliRunner().invoke(app, ["pool", "status", "--workdir", str(wd)])
        assert r.exit_code == 1 and "killed by signal SIGKILL" in r.output and "fake llama server" in r.output
    finally:
        stop_pool(wd)


def test_pool_down_stops_the_server_behind_its_watcher(fake_server, tmp_path):
    wd = tmp_path / "pool"
    h = start_pool(["smollm2-135m"], port_base=0, workdir=wd, rewriter_server=False, ready_timeout_s=30)
    watcher = h.members[0].pid
    server = int(Path(f"/proc/{watcher}/task/{watcher}/children").read_text().split()[0])
    assert stop_pool(wd) == ["smollm2-135m"]
    deadline = time.monotonic() + 10
    while Path(f"/proc/{server}").exists() and Path(f"/proc/{server}/stat").read_text().split(")")[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the server outlived pool down"
        time.sleep(0.1)


def test_kill_9_of_the_watcher_takes_the_server_with_it(fake_server, tmp_path):
    """The pid `pool status` shows is the watcher: kill -9 of it must not leave the server running
    (the server asked the kernel for SIGTERM when its parent dies)."""
    wd = tmp_path / "pool"
    h = start_pool(["smollm2-135m"], port_base=0, workdir=wd, rewriter_server=False, ready_timeout_s=30)
    watcher = h.members[0].pid
    server = int(Path(f"/proc/{watcher}/task/{watcher}/children").read_text().split()[0])
    os.kill(watcher, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{server}").exists() and Path(f"/proc/{server}/stat").read_text().split(")")[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the server outlived its watcher's kill -9"
        time.sleep(0.1)
    stop_pool(wd)
