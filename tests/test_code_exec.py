"""The code-exec scorer: real child processes with time, memory and no-network limits."""

from __future__ import annotations

import json

import pytest

from caproute.collect.code_exec import CodeTask, build_program, extract_code, run_program, score_code
from caproute.collect.scorers import CodeExecScorer, get_scorer
from caproute.errors import ConfigError

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
    "import socket\nsocket.socket()\n",
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9')\n",
    "import socket\nsocket.create_connection(('127.0.0.1', 9))\n",
    "import subprocess\nsubprocess.run(['curl', 'http://example.com'])\n",
    "import os\nos.system('true')\n",
])
def test_network_and_processes_are_blocked(code):
    run = run_program(code, timeout_s=5)
    assert run.status == "sandbox_blocked", run
    assert not run.passed


def test_a_blocked_call_inside_tests_fails_them():
    code = "def add(a, b):\n    import socket\n    socket.socket()\n    return a + b\n"
    assert score_code(code, MBPP).status == "sandbox_blocked"


def test_extract_code_prefers_the_block_defining_the_entry_point():
    text = "```python\nprint(add(1, 2))\n```\n\n```python\ndef add(a, b):\n    return a + b\n```"
    assert extract_code(text, "add").startswith("def add")
    assert extract_code("no fence at all", None) == "no fence at all"
    assert extract_code("", None) is None


def test_task_definition_format():
    t = CodeTask.parse(HUMANEVAL)
    assert t.entry_point == "add" and t.prompt.startswith("def add")
    prog = build_program("    return a + b\n", t)
    assert prog.rstrip().endswith("check(add)") and "def add(a, b):" in prog
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
