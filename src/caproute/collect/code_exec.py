"""The ``code-exec`` scorer: run generated Python against a task's tests in a limited subprocess.

Each decode is run once (pass@1 per decode), so R decodes of a (query, model) give its pass rate
as the DARS mean quality. A run passes when the program (solution + tests) exits normally.

Task definition (the ``answer`` column of the queries file; see docs/collect.md):

- a JSON object ``{"tests": CODE, "entry_point": NAME?, "prompt": CODE?, "setup": CODE?}``:
  HumanEval style when ``tests`` defines ``check(candidate)`` and ``entry_point`` names the
  function (the program ends with ``check(NAME)``; ``prompt``, the signature and docstring, is
  put before an answer that does not define NAME itself); MBPP style when ``tests`` is a block of
  ``assert`` lines (``setup`` = MBPP's ``test_setup_code``);
- any other text is taken as the test code itself.

:func:`caproute.collect.queries.load_queries` also reads HumanEval (``task_id, prompt, test,
entry_point``) and MBPP (``task_id, text, test_list``) files directly and writes this format.

Limits of the child process (PROPOSED defaults): wall time ``timeout_s`` = 10 (the process
group is killed), CPU time ``timeout_s`` + 1 s (RLIMIT_CPU), address space ``memory_mb`` = 1024
(RLIMIT_AS: an unbounded allocation ends in MemoryError), files written <= 16 MB (RLIMIT_FSIZE),
no core dumps. Network: unshare is not available to an unprivileged user, so the child installs
a CPython audit hook before the program runs that refuses socket creation, connect, bind and
name lookups, and refuses to start other processes (subprocess, os.system, exec, spawn, fork) so
the block cannot be sidestepped by a non-Python program. Audit hooks cannot be removed from
inside the process. This is a guard against accidents and sloppy code, not a security boundary
against hostile code: run untrusted code in a container or VM.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT_S = 10.0  # PROPOSED
DEFAULT_MEMORY_MB = 1024  # PROPOSED
MAX_FILE_MB = 16  # PROPOSED
STATUSES = ("passed", "failed", "error", "syntax_error", "timeout", "memory", "sandbox_blocked", "no_code")

# The child's bootstrap: audit hook first, then the program; the outcome goes to a result file.
_BOOTSTRAP = r'''
import json, sys
_result, _prog, _nonce = sys.argv[1], sys.argv[2], sys.argv[3]
class NetworkBlocked(PermissionError):
    pass
_BLOCKED_PREFIX = ("socket.", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                   "os.fork", "os.forkpty", "pty.spawn")
_ALLOWED = {"socket.gethostname"}
def _hook(event, args):
    if event.startswith(_BLOCKED_PREFIX) and event not in _ALLOWED:
        raise NetworkBlocked(f"caproute code-exec sandbox: '{event}' is not allowed")
def _write(status, detail):
    with open(_result, "w") as f:
        json.dump({"nonce": _nonce, "status": status, "detail": detail[-2000:]}, f)
src = open(_prog).read()
try:
    code = compile(src, "solution.py", "exec")
except SyntaxError as e:
    _write("syntax_error", f"{e.msg} (line {e.lineno})")
    sys.exit(3)
sys.addaudithook(_hook)
try:
    exec(code, {"__name__": "__main__"})
except AssertionError as e:
    _write("failed", "AssertionError: " + str(e))
    sys.exit(1)
except MemoryError:
    _write("memory", "MemoryError")
    sys.exit(1)
except NetworkBlocked as e:
    _write("sandbox_blocked", str(e))
    sys.exit(1)
except SystemExit as e:
    if e.code not in (None, 0):
        _write("failed", f"SystemExit({e.code!r})")
        sys.exit(1)
except BaseException as e:
    if isinstance(e.__context__, NetworkBlocked) or "caproute code-exec sandbox" in str(e):
        _write("sandbox_blocked", f"{type(e).__name__}: {e}")
    else:
        _write("error", f"{type(e).__name__}: {e}")
    sys.exit(1)
_write("passed", "")
'''


@dataclass(frozen=True)
class CodeTask:
    """Tests of one item (see the module docstring for the format)."""

    tests: str
    entry_point: str | None = None
    prompt: str | None = None
    setup: str | None = None

    @classmethod
    def parse(cls, gold: str) -> CodeTask:
        text = str(gold)
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, ValueError):
            return cls(tests=text)
        if not isinstance(obj, dict):
            return cls(tests=text)
        if not isinstance(obj.get("tests"), str) or not obj["tests"].strip():
            raise ValueError("task definition needs a non-empty string 'tests'")
        extra = set(obj) - {"tests", "entry_point", "prompt", "setup"}
        if extra:
            raise ValueError(f"task definition has unknown keys {sorted(extra)}")
        return cls(obj["tests"], obj.get("entry_point"), obj.get("prompt"), obj.get("setup"))


@dataclass(frozen=True)
class CodeRun:
    status: str  # one of STATUSES
    passed: bool
    detail: str
    seconds: float

    def to_dict(self) -> dict:
        return {"status": self.status, "passed": self.passed, "detail": self.detail, "seconds": round(self.seconds, 3)}


_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(response: str | None, entry_point: str | None = None) -> str | None:
    """The solution in a response: the first fenced block that defines ``entry_point`` (else the
    longest fenced block), or the whole response when it has no fence. None when empty."""
    if not response or not response.strip():
        return None
    blocks = [b for b in _FENCE.findall(response) if b.strip()]
    if not blocks:
        return response
    if entry_point:
        for b in blocks:
            if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", b, re.MULTILINE):
                return b
    return max(blocks, key=len)


def build_program(code: str, task: CodeTask) -> str:
    """Solution + tests as one program (pure)."""
    parts = []
    if task.setup:
        parts.append(task.setup)
    defines = task.entry_point and re.search(rf"^\s*def\s+{re.escape(task.entry_point)}\s*\(", code, re.MULTILINE)
    if task.prompt and task.entry_point and not defines:
        parts.append(task.prompt + code)  # a body completing the prompt (HumanEval completions)
    else:
        parts.append(code)
    parts.append(task.tests)
    if task.entry_point and re.search(r"^\s*def\s+check\s*\(", task.tests, re.MULTILINE):
        parts.append(f"check({task.entry_point})")
    return "\n\n".join(parts) + "\n"


def _limits(timeout_s: float, memory_mb: int):
    def apply() -> None:
        import resource

        cpu = int(timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        mem = int(memory_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        fsize = MAX_FILE_MB * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_program(program: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB) -> CodeRun:
    """Run ``program`` in a limited child Python; the outcome as a :class:`CodeRun`."""
    import signal

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="caproute-code-") as tmp:
        d = Path(tmp)
        prog, result, boot = d / "solution.py", d / f"result-{secrets.token_hex(8)}.json", d / "_bootstrap.py"
        prog.write_text(program)
        boot.write_text(_BOOTSTRAP)
        nonce = secrets.token_hex(8)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "HOME": tmp, "TMPDIR": tmp}
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(boot), str(result), str(prog), nonce],
            cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, preexec_fn=_limits(timeout_s, memory_mb))
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return CodeRun("timeout", False, f"killed after {timeout_s:g} s", time.monotonic() - t0)
        seconds = time.monotonic() - t0
        out = None
        if result.exists():
            try:
                out = json.loads(result.read_text())
            except (json.JSONDecodeError, OSError):
                out = None
        if out is not None and out.get("nonce") == nonce:
            status = out["status"]
            return CodeRun(status, status == "passed", out.get("detail", ""), seconds)
        rc = proc.returncode
        tail = err.decode("utf-8", "replace")[-500:] if err else ""
        if rc in (-signal.SIGXCPU, -signal.SIGKILL):
            return CodeRun("timeout", False, f"CPU limit ({rc})", seconds)
        if "MemoryError" in tail:
            return CodeRun("memory", False, tail, seconds)
        return CodeRun("error", False, f"exit status {rc}: {tail}", seconds)


def score_code(response: str | None, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
               memory_mb: int = DEFAULT_MEMORY_MB) -> CodeRun:
    """pass@1 of one response: extract the code, build the program with the task's tests, run it."""
    task = CodeTask.parse(gold)
    code = extract_code(response, task.entry_point)
    if code is None:
        return CodeRun("no_code", False, "empty response", 0.0)
    return run_program(build_program(code, task), timeout_s=timeout_s, memory_mb=memory_mb)
