"""The code-exec harness: the script that runs INSIDE the sandbox (standard library only).

Started as ``python -I -S -B _code_harness.py PAYLOAD_FD REPORT_FD UID GID CPU_S AS_BYTES FSIZE
NPROC NOFILE``; never imported by caproute. In this order, before any candidate code runs, it:

1. reads the payload (JSON: the per-run nonce, the solution, the tests, the entry point) from
   PAYLOAD_FD and closes it, so neither the nonce nor the tests stay on any file the candidate
   can open;
2. drops to UID/GID when they are >= 0 (a root caller: the sandbox starts as root with only
   CAP_SETUID/CAP_SETGID, and a throwaway uid makes RLIMIT_NPROC count this run alone) and
   checks that no capability is left;
3. sets its rlimits (inherited by every process the candidate starts) and turns off the
   tracing hooks that let code rewrite a running frame (``sys.settrace`` jumps over asserts);
4. runs the solution in a fresh ``__main__`` module, then the tests in a namespace of their own:
   the solution's names minus any that shadow a built-in, and a private copy of the built-ins
   taken before the solution ran.

The verdict is one record ``\\n<nonce> <status> <hex detail>\\n`` appended to REPORT_FD (a file the
parent opened write-only), written only here, after the tests returned. A solution that exits
(``sys.exit``, ``os._exit``, a signal) before that leaves no record: the parent counts it a
failure. Statuses other than ``passed`` are never a pass, so the order of checks is fail-closed.
"""

import os
import sys


def _describe(exc) -> str:
    """``Type: args`` of an exception without running its own ``__str__``/``__repr__`` (a
    candidate's exception class could run code while the harness formats it)."""
    name = type.__dict__["__qualname__"].__get__(type(exc))
    try:
        args = BaseException.__dict__["args"].__get__(exc)
    except Exception:
        args = ()
    shown = []
    for a in args[:3]:
        if type(a) in (str, int, float, bool):
            shown.append(str.__str__(a) if type(a) is str else repr(a))
        else:
            shown.append(f"<{type.__dict__['__qualname__'].__get__(type(a))}>")
    return f"{name}: {', '.join(shown)}" if shown else name


def main(argv) -> None:
    write, close, exit_ = os.write, os.close, os._exit
    payload_fd, report_fd, uid, gid, cpu_s, as_bytes, fsize, nproc, nofile = (int(a) for a in argv)
    import json

    chunks = []
    while True:
        b = os.read(payload_fd, 1 << 16)
        if not b:
            break
        chunks.append(b)
    close(payload_fd)
    payload = json.loads(b"".join(chunks).decode("utf-8"))
    nonce = payload["nonce"].encode("ascii")
    del chunks

    def report(status: str, detail: str = "") -> None:
        record = b"\n" + nonce + b" " + status.encode("ascii") + b" " + \
            detail[-2000:].encode("utf-8", "backslashreplace").hex().encode("ascii") + b"\n"
        try:
            write(report_fd, record)
        finally:
            exit_(0)

    if uid >= 0:
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            with open("/proc/self/status") as f:
                caps = [line.split()[1] for line in f if line.startswith(("CapEff", "CapPrm"))]
            if os.getuid() != uid or os.geteuid() != uid or any(int(c, 16) for c in caps):
                report("sandbox_error", f"privileges not dropped (uid {os.getuid()}, caps {caps})")
        except OSError as e:
            report("sandbox_error", f"cannot drop privileges: {e}")

    import resource
    import signal

    def limit(which, value):
        if value > 0:
            hard = resource.getrlimit(which)[1]
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))

    try:
        limit(resource.RLIMIT_CPU, cpu_s)
        limit(resource.RLIMIT_AS, as_bytes)
        limit(resource.RLIMIT_FSIZE, fsize)
        limit(resource.RLIMIT_NPROC, nproc)
        limit(resource.RLIMIT_NOFILE, nofile)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as e:
        report("sandbox_error", f"cannot set limits: {e}")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file over the size limit: an OSError, not a kill

    try:
        solution = compile(payload["solution"], "solution.py", "exec")
    except (SyntaxError, ValueError) as e:
        report("syntax_error", f"{type(e).__name__}: {getattr(e, 'msg', e)} (line {getattr(e, 'lineno', '?')})")
    try:
        tests = compile(payload["tests"], "tests.py", "exec")
    except (SyntaxError, ValueError) as e:
        report("error", f"the tests do not compile: {getattr(e, 'msg', e)} (line {getattr(e, 'lineno', '?')})")
    keep = payload.get("entry_point")
    del payload

    import builtins

    clean_builtins = dict(builtins.__dict__)  # before any candidate code: the tests' own copy

    def refuse(*_a, **_k):
        raise RuntimeError("caproute code-exec: tracing hooks are turned off in the sandbox")

    sys.settrace = sys.setprofile = refuse
    if hasattr(sys, "monitoring"):
        del sys.monitoring
    # every built-in the harness uses after the solution ran, bound now: the solution may rebind
    # builtins.exec and friends
    _issub, _type, _dict, _exec, _str = issubclass, type, dict, exec, str
    main_mod = type(sys)("__main__")
    main_mod.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main_mod
    sys.argv = ["solution.py"]

    try:
        _exec(solution, main_mod.__dict__)
    except BaseException as e:  # noqa: BLE001 - every way out of the solution is a verdict
        t = _type(e)
        if _issub(t, SystemExit):
            report("early_exit", "the solution raised SystemExit before the tests ran")
        if _issub(t, MemoryError):
            report("memory", "MemoryError")
        report("error", _describe(e))
    # exact str keys only (a str subclass could run code in __hash__); no name shadowing a built-in
    ns = {k: v for k, v in main_mod.__dict__.items()
          if _type(k) is _str and (k == keep or k not in clean_builtins)}
    ns["__builtins__"] = _dict(clean_builtins)
    ns["__name__"] = "__main__"
    try:
        _exec(tests, ns)
    except BaseException as e:  # noqa: BLE001
        t = _type(e)
        if _issub(t, AssertionError):
            report("failed", _describe(e))
        if _issub(t, SystemExit):
            report("early_exit", "SystemExit raised during the tests")
        if _issub(t, MemoryError):
            report("memory", "MemoryError")
        report("error", _describe(e))
    report("passed")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BaseException:  # noqa: BLE001 - a harness failure: a traceback on stderr, no verdict
        import traceback

        traceback.print_exc()
    finally:
        os._exit(3)  # never reach interpreter shutdown (a candidate's atexit or finaliser hooks)
