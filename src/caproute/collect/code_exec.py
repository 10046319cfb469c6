"""The ``code-exec`` scorer: run generated Python against a task's tests in a bubblewrap sandbox.

Each decode is run once (pass@1 per decode), so R decodes of a (query, model) give its pass rate
as the DARS mean quality. A run passes only when the harness reports that the tests returned.

Task definition (the ``answer`` column of the queries file; see docs/collect.md):

- a JSON object ``{"tests": CODE, "entry_point": NAME?, "prompt": CODE?, "setup": CODE?}``:
  HumanEval style when ``tests`` defines ``check(candidate)`` and ``entry_point`` names the
  function (the tests end with ``check(NAME)``; ``prompt``, the signature and docstring, is
  put before an answer that does not define NAME itself); MBPP style when ``tests`` is a block of
  ``assert`` lines (``setup`` = MBPP's ``test_setup_code``, run before the solution);
- any other text is taken as the test code itself.

:func:`caproute.collect.queries.load_queries` also reads HumanEval (``task_id, prompt, test,
entry_point``) and MBPP (``task_id, text, test_list``) files directly and writes this format.

The verdict (see :mod:`caproute.collect._code_harness`): the harness reads a random per-run nonce,
the solution and the tests from a file descriptor it closes before any candidate code runs, runs
the solution, then the tests in their own namespace, and only then appends ``<nonce> passed`` to a
write-only report file. The candidate's exit status, its output and any file it writes never make
a pass; exiting before the tests (``sys.exit``, ``os._exit``, a signal) is ``early_exit``.

Isolation (``bwrap``, Debian/Ubuntu package ``bubblewrap``): new network, PID, IPC and UTS
namespaces (no network at all; only the sandbox's own processes are visible, and all of them
die with it), an empty environment, the system's ``/usr`` and the interpreter read-only, nothing
else of the caller's files, private size-capped ``/tmp`` and working directory, and rlimits on
CPU time, address space, processes, open files and file size, plus a wall-clock limit that
kills the whole sandbox. A root caller runs the code as a throwaway uid without capabilities.
Without a working ``bwrap``, :func:`run_program` raises :class:`SandboxUnavailable` unless
``unsafe_no_sandbox=True`` (same harness and limits, none of the isolation). Threat model:
docs/collect.md.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from caproute.errors import ConfigError

DEFAULT_TIMEOUT_S = 10.0  # PROPOSED
DEFAULT_MEMORY_MB = 1024  # PROPOSED
MAX_FILE_MB = 16  # PROPOSED: RLIMIT_FSIZE, per file
SCRATCH_MB = 64  # PROPOSED: size of the private /tmp and working directory (RAM-backed tmpfs)
MAX_OPEN_FILES = 256  # PROPOSED
STATUSES = ("passed", "failed", "error", "syntax_error", "timeout", "memory", "early_exit", "sandbox_error",
            "no_code")
_HARNESS = Path(__file__).with_name("_code_harness.py")
_SANDBOX_ROOT = "/sandbox"


class SandboxUnavailable(ConfigError):
    """bubblewrap (``bwrap``) is missing or cannot create its namespaces here, and the user did
    not ask to run model-written code without isolation (``unsafe_no_sandbox``)."""


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


@dataclass(frozen=True)
class CodeProgram:
    """What the harness runs: ``solution`` first (in ``__main__``), then ``tests``."""

    solution: str
    tests: str = ""
    entry_point: str | None = None


def build_program(code: str, task: CodeTask) -> CodeProgram:
    """The solution (setup, then the answer or prompt + answer) and the tests (pure)."""
    parts = []
    if task.setup:
        parts.append(task.setup)
    defines = task.entry_point and re.search(rf"^\s*def\s+{re.escape(task.entry_point)}\s*\(", code, re.MULTILINE)
    if task.prompt and task.entry_point and not defines:
        parts.append(task.prompt + code)  # a body completing the prompt (HumanEval completions)
    else:
        parts.append(code)
    tests = task.tests
    if task.entry_point and re.search(r"^\s*def\s+check\s*\(", task.tests, re.MULTILINE):
        tests = f"{tests}\n\ncheck({task.entry_point})\n"
    return CodeProgram("\n\n".join(parts) + "\n", tests, task.entry_point)


# -- the sandbox ------------------------------------------------------------------------------------
def _system_binds() -> list[str]:
    """Read-only binds of the system directories and the interpreter (symlinked top-level
    directories, as on merged-/usr systems, become the same symlinks)."""
    args: list[str] = []
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"):
        args += ["--ro-bind-try", f, f]
    prefix = os.path.realpath(sys.base_prefix)
    exe_dir = os.path.dirname(os.path.realpath(sys.executable))
    made: set[str] = set()
    for d in (prefix, exe_dir):
        if d.startswith("/usr/") or any(d == b or d.startswith(b + "/") for b in made):
            continue
        # bwrap would create the parents (e.g. /root of a pyenv install) 0700: unreadable once the
        # harness has dropped to its throwaway uid
        parts = Path(d).parts[1:-1]
        for i in range(len(parts)):
            args += ["--perms", "0755", "--dir", "/" + "/".join(parts[: i + 1])]
        args += ["--ro-bind", d, d]
        made.add(d)
    return args


def _native_escape_hatches() -> list[str]:
    """bwrap arguments that hide what would let code read the harness's memory from inside its own
    process: every Python's ctypes and test-only C-API modules (bound over with /dev/null) and every
    site-/dist-packages directory (third-party native modules; the harness runs ``python -I -S``)."""
    import glob

    roots = sorted({os.path.realpath(sys.base_prefix), "/usr", "/usr/local"})
    args: list[str] = []
    for root in roots:
        for pat in ("_ctypes*.so", "_test*.so", "_xx*.so", "xxlimited*.so"):
            for f in sorted(glob.glob(f"{root}/lib/python3*/lib-dynload/{pat}")):
                args += ["--ro-bind", "/dev/null", f]
        for d in sorted(glob.glob(f"{root}/lib/python3*/site-packages") + glob.glob(f"{root}/lib/python3*/dist-packages")):
            if os.path.isdir(d):
                args += ["--perms", "0555", "--size", "4096", "--tmpfs", d, "--remount-ro", d]
    return args


def bwrap_command(bwrap: str, src_dir: str, argv: list[str], *, as_root: bool) -> list[str]:
    """The bubblewrap command line that runs ``argv`` (pure but for reading the system layout).

    ``src_dir`` (the harness) is bound read-only at /sandbox/src; the working directory and /tmp
    are private RAM-backed tmpfs of SCRATCH_MB. A root caller keeps only CAP_SETUID/CAP_SETGID,
    which the harness uses to drop to a throwaway uid before any candidate code runs; any other
    caller gets a user namespace (its own uid, no capabilities)."""
    size = str(SCRATCH_MB * 1024 * 1024)
    ns = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if as_root:
        ns += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        ns += ["--unshare-user", "--cap-drop", "ALL"]
    return [
        bwrap, *ns, "--die-with-parent", "--new-session", "--hostname", "sandbox",
        *_system_binds(), *_native_escape_hatches(),
        "--dev", "/dev",  # no /proc at all: no /proc/<pid>/environ, /proc/self/mem, fd listing
        "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm",
        "--perms", "1777", "--size", size, "--tmpfs", "/tmp",
        "--ro-bind", src_dir, f"{_SANDBOX_ROOT}/src",
        "--perms", "1777", "--size", size, "--tmpfs", f"{_SANDBOX_ROOT}/work",
        "--remount-ro", "/dev", "--remount-ro", "/",
        "--chdir", f"{_SANDBOX_ROOT}/work",
        "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", f"{_SANDBOX_ROOT}/work",
        "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0",
        "--setenv", "OMP_NUM_THREADS", "1",
        "--", *argv,
    ]


@functools.lru_cache(maxsize=4)
def sandbox_problem(bwrap: str | None = None) -> str | None:
    """Why code-exec cannot isolate code on this machine (None: it can). Runs ``bwrap`` once with
    the real sandbox options on ``true``; cached per process."""
    exe = bwrap or shutil.which("bwrap")
    if exe is None:
        return "bubblewrap is not installed ('bwrap' is not on PATH)"
    with tempfile.TemporaryDirectory(prefix="caproute-sbx-") as tmp:
        os.chmod(tmp, 0o755)
        cmd = bwrap_command(exe, tmp, [os.path.realpath(sys.executable), "-I", "-S", "-c", "pass"],
                            as_root=os.geteuid() == 0)
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, env={})
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"bwrap could not be started: {e}"
    if r.returncode != 0:
        return f"bwrap cannot create the sandbox here: {r.stderr.decode('utf-8', 'replace').strip()[-300:]}"
    return None


def require_sandbox(unsafe_no_sandbox: bool = False) -> None:
    """Raise :class:`SandboxUnavailable` when code cannot be isolated and the user did not opt out."""
    if unsafe_no_sandbox:
        return
    problem = sandbox_problem()
    if problem is not None:
        raise SandboxUnavailable(
            f"code-exec runs model-written code only inside a bubblewrap sandbox: {problem}. Install it "
            "(Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap), or, to run the "
            "code WITHOUT isolation on this machine, set 'unsafe_no_sandbox: true' in the task's "
            "scorer_args (docs/collect.md, threat model)")


def _read_verdict(report: bytes, nonce: str) -> tuple[str, str] | None:
    """The harness's record ``\\n<nonce> <status> <hex>\\n`` in the report file (the last one)."""
    found = re.findall(rb"\n" + nonce.encode() + rb" ([a-z_]+) ([0-9a-f]*)\n", report)
    if not found:
        return None
    status, detail = found[-1]
    try:
        return status.decode(), bytes.fromhex(detail.decode()).decode("utf-8", "replace")
    except ValueError:
        return None


def _tail(path: Path, n: int = 2000) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - n))
        return f.read().decode("utf-8", "replace")


def run_program(program: CodeProgram | str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                memory_mb: int = DEFAULT_MEMORY_MB, unsafe_no_sandbox: bool = False) -> CodeRun:
    """Run a program (a :class:`CodeProgram`, or a bare solution without tests) in the sandbox;
    the outcome as a :class:`CodeRun`. Raises :class:`SandboxUnavailable` (see
    :func:`require_sandbox`)."""
    require_sandbox(unsafe_no_sandbox)
    if isinstance(program, str):
        program = CodeProgram(program)
    t0 = time.monotonic()
    nonce = secrets.token_hex(16)
    as_root = os.geteuid() == 0
    uid = (1 << 20) + secrets.randbelow(1 << 29) if as_root and not unsafe_no_sandbox else -1
    with tempfile.TemporaryDirectory(prefix="caproute-code-") as tmp:
        d = Path(tmp)
        src = d / "src"
        src.mkdir(mode=0o755)
        os.chmod(src, 0o755)  # readable by the throwaway uid (the parent directory stays 0700)
        harness = src / "harness.py"
        shutil.copyfile(_HARNESS, harness)
        os.chmod(harness, 0o644)
        (d / "payload.json").write_text(json.dumps({"nonce": nonce, "solution": program.solution,
                                                    "tests": program.tests, "entry_point": program.entry_point}))
        payload_fd = os.open(d / "payload.json", os.O_RDONLY)
        report_fd = os.open(d / "report", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        limits = [int(timeout_s) + 1, int(memory_mb) * 1024 * 1024, MAX_FILE_MB * 1024 * 1024, MAX_OPEN_FILES]
        py = os.path.realpath(sys.executable)
        if unsafe_no_sandbox:
            work = d / "work"
            work.mkdir()
            argv = [py, "-I", "-S", "-B", str(harness), str(payload_fd), str(report_fd), "-1", "-1",
                    *map(str, limits)]
            cmd, cwd = argv, str(work)
            env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "PYTHONHASHSEED": "0",
                   "OMP_NUM_THREADS": "1"}
        else:
            argv = [py, "-I", "-S", "-B", f"{_SANDBOX_ROOT}/src/harness.py", str(payload_fd), str(report_fd),
                    str(uid), str(uid), *map(str, limits)]
            cmd, cwd, env = bwrap_command(shutil.which("bwrap") or "bwrap", str(src), argv, as_root=as_root), tmp, {}
        try:
            with open(d / "stdout", "wb") as out, open(d / "stderr", "wb") as err:
                proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        pass_fds=(payload_fd, report_fd), start_new_session=True)
        finally:
            os.close(payload_fd)
            os.close(report_fd)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # the whole session: bwrap, and through --die-with-parent its PID namespace (unsafe mode:
            # the process group only; a child that called setsid() escapes it)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        seconds = time.monotonic() - t0
        verdict = _read_verdict((d / "report").read_bytes()[-(1 << 16):], nonce)
        if timed_out:
            return CodeRun("timeout", False, f"killed after {timeout_s:g} s", seconds)
        if verdict is not None:
            status, detail = verdict
            if status not in STATUSES:
                return CodeRun("error", False, f"unknown harness status {status!r}", seconds)
            return CodeRun(status, status == "passed", detail, seconds)
        tail = _tail(d / "stderr")
        if rc in (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL):
            return CodeRun("timeout", False, f"CPU limit (exit status {rc})", seconds)
        if "MemoryError" in tail:
            return CodeRun("memory", False, tail[-500:], seconds)
        if not unsafe_no_sandbox and tail.startswith("bwrap:"):
            return CodeRun("sandbox_error", False, tail[-500:], seconds)
        return CodeRun("early_exit", False, f"the program ended before the harness's verdict (exit status {rc}): "
                       f"{tail[-500:]}", seconds)


def score_code(response: str | None, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
               memory_mb: int = DEFAULT_MEMORY_MB, unsafe_no_sandbox: bool = False) -> CodeRun:
    """pass@1 of one response: extract the code, build the program with the task's tests, run it."""
    task = CodeTask.parse(gold)
    code = extract_code(response, task.entry_point)
    if code is None:
        return CodeRun("no_code", False, "empty response", 0.0)
    return run_program(build_program(code, task), timeout_s=timeout_s, memory_mb=memory_mb,
                       unsafe_no_sandbox=unsafe_no_sandbox)
