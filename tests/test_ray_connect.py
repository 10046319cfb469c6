"""Connecting to an existing Ray cluster with the Ray version the install resolves (issue 16):
`ray start --head` enables token authentication when ~/.ray/auth_token exists (any earlier local
`ray.init()` writes one), and a driver with an explicit address failed with InvalidAuthToken until
RAY_AUTH_MODE=token was set. caproute.core.ray_connect.init_ray connects in token mode then."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _procgroups import stop_group  # noqa: E402
from caproute.core.ray_connect import ray_token_available

REPO = Path(__file__).resolve().parents[1]
RAY = REPO / ".venv" / "bin" / "ray"


def test_token_sources(monkeypatch, tmp_path):
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not ray_token_available()
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t")
    assert ray_token_available()
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    assert not ray_token_available()                     # an explicit path wins over the default file
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
    assert ray_token_available()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_explicit_address_to_a_token_cluster(tmp_path):
    pytest.importorskip("ray")
    if not RAY.exists():
        pytest.skip(f"no ray CLI at {RAY}")
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(uuid.uuid4().hex)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO / "src"))
    temp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")          # short: Ray's socket paths
    port = _free_port()
    log = tmp_path / "head.log"
    with open(log, "wb") as fh:
        head = subprocess.Popen([str(RAY), "start", "--head", "--port", str(port), "--num-cpus", "1",
                                 "--temp-dir", temp, "--include-dashboard=false", "--disable-usage-stats",
                                 "--block"], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while b"Ray runtime started" not in log.read_bytes():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert b"Token authentication is enabled" in log.read_bytes()   # the set-up of the report
        code = ("from caproute.core.ray_connect import init_ray\nimport ray, os\n"
                f"init_ray('127.0.0.1:{port}')\n"
                "print('mode', os.environ.get('RAY_AUTH_MODE'), 'answer', ray.get(ray.remote(lambda: 41 + 1).remote()))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240)
        assert r.returncode == 0 and "mode token answer 42" in r.stdout, r.stdout + r.stderr[-3000:]
        assert "InvalidAuthToken" not in r.stderr
    finally:
        stop_group(head.pid, grace_s=30)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(10)
        subprocess.run(["rm", "-rf", temp], check=False)
