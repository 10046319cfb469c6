"""The code-exec scorer: real bubblewrap sandboxes with time, memory and no-network limits (the escape
corpus is tests/test_code_exec_escapes.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from caproute.collect.code_exec import (
    CodeTask,
    SandboxUnavailable,
    build_program,
    extract_code,
    require_sandbox,
    run_program,
    sandbox_problem,
    score_code,
)
from caproute.collect.scorers import CodeExecScorer, get_scorer
from caproute.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from _chatstub import ChatStub  # noqa: E402

# never a silent skip: a machine without a working bwrap fails these tests (.ci/run installs it)
pytestmark = pytest.mark.usefixtures("bwrap_works")


@pytest.fixture(scope="session")
def bwrap_works():
    problem = sandbox_problem()
    assert problem is None, f"code-exec tests need bubblewrap: {problem} (apt-get install bubblewrap)"

MBPP = json.dumps({"tests": "assert add(1, 2) == 3\nassert add(-1, 1) == 0"})
HUMANEVAL = json.dumps({
    "prompt": "def add(a, b):\n    \"\"\"Sum of a and b.\"\"\"\n",
    "tests": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(0, 0) == 0\n",
    "entry_point": "add",
})


def test_passing_and_failing_solutions():
    ok = score_code("```python\ndef add(a, b):\n    return a + b\n```", MBPP)
    assert ok.status == "passed" and ok.passed
    bad = score_code("```python\ndef add(a, b):\n    return a - b\n```", MBPP)
    assert bad.status == "failed" and not bad.passed and "AssertionError" in bad.detail
    err = score_code("def add(a, b):\n    return undefined_name\n", MBPP)
    assert err.status == "error" and "NameError" in err.detail
    syn = score_code("def add(a, b) return a", MBPP)
    assert syn.status == "syntax_error"
    assert score_code("   ", MBPP).status == "no_code"


def test_humaneval_style_completion_and_full_function():
    # a body that completes the prompt, and a full function: both run check(add)
    assert score_code("    return a + b\n", HUMANEVAL).passed
    assert score_code("Here you go:\n```python\ndef add(a, b):\n    return b + a\n```\nDone.", HUMANEVAL).passed
    assert not score_code("    return a * b\n", HUMANEVAL).passed


def test_infinite_loop_is_killed_at_the_time_limit():
    run = run_program("while True:\n    pass\n", timeout_s=1.0)
    assert run.status == "timeout" and not run.passed
    assert run.seconds < 10


def test_unbounded_allocation_hits_the_memory_limit():
    run = run_program("x = []\nwhile True:\n    x.append(bytearray(50_000_000))\n", timeout_s=20, memory_mb=256)
    assert run.status == "memory" and not run.passed


@pytest.mark.parametrize("code", [
    "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\n",
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9', timeout=2)\n",
    "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=2)\n",
    "import socket\nsocket.getaddrinfo('example.com', 80)\n",
])
def test_there_is_no_network(code):
    run = run_program(code, timeout_s=5)
    assert run.status == "error" and not run.passed, run
    assert "rror" in run.detail  # OSError, URLError, gaierror


def test_no_process_or_thread_can_be_started():
    # the worker thread sets RLIMIT_NPROC to 1 before the solution runs (see test_code_exec_escapes.py)
    for code in ("import os\nassert os.system('true') == 0\n", "import subprocess\nsubprocess.run(['true'])\n",
                 "import threading\nthreading.Thread(target=print).start()\n"):
        run = run_program(code, timeout_s=5)
        assert run.status == "error" and not run.passed, run


def test_a_failing_call_inside_tests_fails_them():
    code = "def add(a, b):\n    import socket\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n    return a + b\n"
    assert score_code(code, MBPP).status == "error"


def test_sandbox_refusal_and_the_unsafe_flag(monkeypatch):
    from caproute.collect import code_exec

    monkeypatch.setattr(code_exec, "sandbox_problem", lambda bwrap=None: "bubblewrap is not installed")
    with pytest.raises(SandboxUnavailable, match="unsafe_no_sandbox"):
        score_code("def add(a, b):\n    return a + b\n", MBPP)
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        require_sandbox()
    with pytest.raises(SandboxUnavailable):
        get_scorer("code-exec").bind()
    # the explicit opt-out: same harness and verdict, no isolation
    ok = score_code("def add(a, b):\n    return a + b\n", MBPP, unsafe_no_sandbox=True)
    assert ok.passed
    assert not score_code("import sys\ndef add(a, b):\n    return 0\nsys.exit(0)\n", MBPP,
                          unsafe_no_sandbox=True).passed
    get_scorer("code-exec", unsafe_no_sandbox=True).bind()
    with pytest.raises(ConfigError, match="true or false"):
        get_scorer("code-exec", unsafe_no_sandbox="yes")


def test_extract_code_prefers_the_block_defining_the_entry_point():
    text = "```python\nprint(add(1, 2))\n```\n\n```python\ndef add(a, b):\n    return a + b\n```"
    assert extract_code(text, "add").startswith("def add")
    assert extract_code("no fence at all", None) == "no fence at all"
    assert extract_code("", None) is None


def test_task_definition_format():
    t = CodeTask.parse(HUMANEVAL)
    assert t.entry_point == "add" and t.prompt.startswith("def add")
    prog = build_program("    return a + b\n", t)
    assert prog.tests.rstrip().endswith("check(add)") and "def add(a, b):" in prog.solution
    assert prog.entry_point == "add" and "check" not in prog.solution
    assert CodeTask.parse("assert 1 == 1").tests == "assert 1 == 1"  # plain text = the tests
    with pytest.raises(ValueError, match="tests"):
        CodeTask.parse(json.dumps({"entry_point": "f"}))
    with pytest.raises(ValueError, match="unknown keys"):
        CodeTask.parse(json.dumps({"tests": "assert 1", "extra": 1}))


def test_scorer_registry_and_args():
    s = get_scorer("code-exec", timeout_s=2, memory_mb=256)
    assert isinstance(s, CodeExecScorer) and s.timeout_s == 2
    with pytest.raises(ConfigError, match="unknown scorer_args"):
        get_scorer("code-exec", timeout=2)
    with pytest.raises(ConfigError, match="memory_mb"):
        get_scorer("code-exec", memory_mb=1)


def test_collection_with_code_exec_gives_pass_rates(tmp_path):
    """A collection run against a real HTTP server whose 'models' write code: one correct, one
    looping forever; the pass rate is the mean over decodes and the outcomes are stored."""
    from caproute.collect.config import parse_pool_config
    from caproute.collect.plan import CollectSpec
    from caproute.collect.queries import load_queries
    from caproute.collect.reports import write_reports
    from caproute.collect.runner import collect
    from caproute.data.collect_tables import DETAILS_TABLE
    from caproute.data.store import ObservationStore
    from caproute.errors import DataError

    answers = {"good": "```python\ndef add(a, b):\n    return a + b\n```",
               "loop": "```python\ndef add(a, b):\n    while True:\n        pass\n```"}

    with ChatStub(lambda body: answers[body["model"]]) as srv:
        url = srv.url
        cfg = parse_pool_config({
            "models": [{"name": n, "base_url": url, "model": n, "api_key_env": "", "price_input_per_1m": 1,
                        "price_output_per_1m": 1} for n in answers],
            "tasks": {"code": {"prompt_template": "{question}", "scorer": "code-exec",
                               "scorer_args": {"timeout_s": 1.5, "max_parallel": 2}, "max_tokens": 64}}})
        qf = tmp_path / "he.jsonl"
        qf.write_text(json.dumps({"task_id": "t/0", "prompt": "def add(a, b):\n", "entry_point": "add",
                                  "test": "def check(c):\n    assert c(1, 2) == 3\n"}) + "\n")
        q = load_queries(qf).assign(split="test")
        spec = CollectSpec(dataset="code", task="code", models=tuple(answers), rewrites=0, decodes=0,
                           test_rewrites=0, test_decodes=2, similarity_check=False)
        stats, _ = collect(cfg, q, tmp_path / "obs.duckdb", spec, progress=False)
        assert stats.done == 4 and stats.errors == 0
        with ObservationStore(tmp_path / "obs.duckdb", read_only=True) as s:
            obs = s.read(dataset="code")
            det = s.connection.execute(f"SELECT model, status FROM {DETAILS_TABLE}").df()
        assert obs.groupby("model")["score"].mean().to_dict() == {"good": 1.0, "loop": 0.0}
        assert sorted(det.itertuples(index=False, name=None)) == [("good", "passed")] * 2 + [("loop", "timeout")] * 2
        v = write_reports(tmp_path / "obs.duckdb", "code", cfg.task("code"), tmp_path / "rep")["scoring_validity"]
        assert v["status_counts"] == {"passed": 2, "timeout": 2} and v["rescore_agreement"] == 1.0
        # a malformed task definition is a named error before any request
        bad = q.assign(answer=json.dumps({"entry_point": "add"}))
        with pytest.raises(DataError, match="query 't/0'"):
            collect(cfg, bad, tmp_path / "obs2.duckdb", spec, progress=False)
